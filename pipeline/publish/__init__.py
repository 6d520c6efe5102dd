"""Publishing a gated model as an immutable, verifiable version in an S3 registry (and as a DVC artifact).

Layout: `s3://{bucket}/{prefix}/{model}/{version}/` holds the files and, written last, `manifest.json`;
`{prefix}/{model}/latest.json` names the newest complete version. Modules, one concept each:

- `store`: the S3 client, retries, conditional puts, multipart uploads, one-line errors;
- `hashing`: sha256/md5 digests of files and of multipart parts;
- `registry`: version names, claims, manifests, `latest`, listing;
- `upload`: putting one file into a version (single put or multipart, resumable);
- `manifest`: what a version says about itself, and the lineage it records;
- `dvc_pointer`: the version as a DVC directory on the DVC remote, and its `.dvc` pointer in a git repo;
- `publish`: the whole publish, in the order that keeps a version invisible until complete;
- `pull`: fetching a version, refusing any byte that does not match the manifest;
- `redact`: keeping credentials out of logs, manifests and errors.
"""
