"""The drift reference: the data summary the champion was published with, fetched from the registry for
validate_data to compare this run's data with (pipeline.data.drift.compare)."""

from __future__ import annotations

import hashlib
from typing import Any

from pipeline.contracts.names import PUBLISHED_DATA_SUMMARY
from pipeline.contracts.registry import version_prefix
from pipeline.data.drift import SummaryError, check_summary
from pipeline.publish.registry import latest_manifest
from pipeline.publish.store import MAX_JSON_BYTES, InvalidObject, Store, parse_json


def champion_summary(
    client: Any, bucket: str, prefix: str, model: str
) -> tuple[dict[str, Any] | None, str | None, str]:
    """(the data summary `latest` was published with, or None; its version or None; why there is none).

    No champion, or one published before summaries were, is no baseline: not an error. A registry that cannot
    be read raises (RegistryError, StoreError: a retry may help); a summary that is not one, or whose bytes
    differ from its manifest's sha256, raises SummaryError naming the object.
    """
    store = Store(client, bucket)
    manifest = latest_manifest(client, bucket, prefix, model)
    if manifest is None:
        return None, None, f"no champion in {store.uri(prefix + '/' + model + '/')}: drift not checked"
    version = manifest["version"]
    entry = manifest["files"].get(PUBLISHED_DATA_SUMMARY)
    if entry is None:
        return None, version, f"champion {version} has no {PUBLISHED_DATA_SUMMARY}: drift not checked"
    key = version_prefix(prefix, model, version) + PUBLISHED_DATA_SUMMARY
    body, _ = store.get_bytes(key, max_bytes=MAX_JSON_BYTES)
    if hashlib.sha256(body).hexdigest() != entry["sha256"]:
        raise SummaryError(f"{store.uri(key)}: sha256 differs from the one its manifest records; refusing it")
    try:
        value = parse_json(body, store.uri(key))
    except InvalidObject as exc:  # RecursionError too: a body nested deeper than the parser goes
        raise SummaryError(str(exc)) from None
    return check_summary(value, store.uri(key)), version, ""
