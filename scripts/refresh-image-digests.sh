#!/usr/bin/env bash
# Re-pin every base and third-party image to the digest its tag names today: FROM lines of the
# Dockerfiles and `image:` lines of docker-compose.yml, written as name:tag@sha256:<digest> (the
# tag stays, for people; the digest is what is pulled). Needs registry access and Docker's buildx
# (`docker buildx imagetools inspect`). Images built here (`*:local`) are left alone. Review the
# diff, rebuild, and run the tests before committing it.
set -euo pipefail
cd "$(dirname "$0")/.."
files=(Dockerfile examples/demo/op/Dockerfile docker-compose.yml)

digest_of() {
    docker buildx imagetools inspect "$1" --format '{{json .Manifest}}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["digest"])'
}

refs=$(grep -hoE '^(FROM|[[:space:]]*image:)[[:space:]]+[^[:space:]]+' "${files[@]}" | awk '{print $NF}' | sort -u)
for ref in $refs; do
    tagged=${ref%@*}
    [[ $tagged == *:local ]] && continue
    digest=$(digest_of "$tagged")
    [[ $digest =~ ^sha256:[0-9a-f]{64}$ ]] || { echo "no digest for $tagged: $digest" >&2; exit 1; }
    pinned="$tagged@$digest"
    if [[ $ref != "$pinned" ]]; then
        for file in "${files[@]}"; do
            python3 - "$file" "$ref" "$pinned" <<'PY'
import re, sys
path, old, new = sys.argv[1:]
text = open(path).read()
open(path, "w").write(re.sub(rf"(?<=[\s]){re.escape(old)}(?=\s)", new, text))
PY
        done
        echo "$tagged -> $digest" >&2
    fi
done
