"""A publish that stops (sleeps) at a chosen point so a test can SIGKILL it there.

usage: python tests/publish_killable.py MODEL_DIR BUCKET RUN_ID {part|manifest|none}
  part: before sending part 3 of the multipart upload; manifest: before writing manifest.json.
Prints PAUSED when it stops, DONE <version> when it finishes.
"""

import sys
import time
from pathlib import Path

from pipeline.publish.store import make_client
from pipeline.publish.upload import Transfer
from pipeline.stages.publish import publish_model

model_dir, bucket, run_id, stage = sys.argv[1:5]
client = make_client(max_attempts=2)


def pause(params, **_):
    if (stage == "part" and params.get("PartNumber") == 3) or (
        stage == "manifest" and params["Key"].endswith("/manifest.json")
    ):
        print("PAUSED", flush=True)
        time.sleep(600)


client.meta.events.register("before-parameter-build.s3.UploadPart", pause)
client.meta.events.register("before-parameter-build.s3.PutObject", pause)
result = publish_model(
    Path(model_dir), client=client, bucket=bucket, run_id=run_id,
    transfer=Transfer(threshold=8 * 1024 * 1024, part_size=6 * 1024 * 1024, concurrency=1),
)
print("DONE", result.version, flush=True)
