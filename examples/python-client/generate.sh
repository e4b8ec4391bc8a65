#!/usr/bin/env bash
# Generate the Parley client package (./parley_client) from the OpenAPI document with
# openapi-python-client. The document is ../openapi.json, or the first argument: a file or a
# running server's URL (e.g. http://127.0.0.1:8080/openapi.json).
set -euo pipefail
cd "$(dirname "$0")"
SOURCE=${1:-../openapi.json}
GENERATOR=${OPENAPI_PYTHON_CLIENT:-openapi-python-client}
if [[ $SOURCE == http* ]]; then FROM=(--url "$SOURCE"); else FROM=(--path "$SOURCE"); fi
"$GENERATOR" generate "${FROM[@]}" --config config.yaml --meta none \
  --output-path parley_client --overwrite
