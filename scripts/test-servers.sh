#!/usr/bin/env bash
# Installs the real servers the integration tests start on 127.0.0.1, by package name:
#   - moto[server] (PyPI)    an S3 implementation, any credentials, objects in memory
#   - s3rver (npm)           an S3 implementation that checks credentials, objects on disk
#   - nginx-extras (Debian)  nginx with the WebDAV modules
#   - tahoe-lafs (PyPI)      a Tahoe-LAFS grid (introducer, storage node, gateway)
#   - rsync, openssh (Debian) real producers for the trust tests (rsync --inplace, scp/sftp)
# Idempotent. Everything but nginx goes under $TEST_SERVERS_DIR (default ~/.cache/dropslot-test-servers);
# the tests find the programs there (or through MOTO_SERVER, S3RVER, NGINX). Each test starts
# and stops its own server processes on free loopback ports.
set -euo pipefail
dir=${TEST_SERVERS_DIR:-$HOME/.cache/dropslot-test-servers}
mkdir -p "$dir"

need=()
if ! command -v nginx >/dev/null 2>&1 || [ ! -f /usr/lib/nginx/modules/ngx_http_dav_ext_module.so ]; then
  need+=(nginx-extras)
fi
command -v curl >/dev/null 2>&1 || need+=(curl)
# Real producers for the trust tests: rsync --inplace and its temp files, scp/sftp through sshd.
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v node >/dev/null 2>&1 || need+=(nodejs npm)
python3 -c 'import venv' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ ! -x "$dir/moto/bin/moto_server" ]; then
  python3 -m venv "$dir/moto"
  "$dir/moto/bin/pip" install -q 'moto[server]==5.2.5'
fi
if [ ! -x "$dir/tahoe/bin/tahoe" ]; then
  python3 -m venv "$dir/tahoe"
  "$dir/tahoe/bin/pip" install -q 'tahoe-lafs==1.20.0'
fi
if [ ! -f "$dir/s3rver/node_modules/s3rver/bin/s3rver.js" ]; then
  mkdir -p "$dir/s3rver"
  (cd "$dir/s3rver" && { [ -f package.json ] || npm init -y >/dev/null; } && npm install -s --no-audit --no-fund s3rver@3.7.1 >/dev/null)
fi
echo "test servers ready in $dir (nginx: $(command -v nginx))"
