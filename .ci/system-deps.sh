#!/usr/bin/env bash
# Installs the system packages the test suite and the demo need, when they are missing:
# PostgreSQL and Redis (throwaway servers for concurrency and distributed tests), Debian's
# Chromium and ChromeDriver (admin tests in a real browser) with a CJK font, gettext.
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v msgfmt >/dev/null 2>&1 || need+=(gettext)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# Chinese glyphs in the zh-hans admin screenshots.
dpkg -s fonts-noto-cjk >/dev/null 2>&1 || need+=(fonts-noto-cjk)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "Missing system packages: ${need[*]}. Install them (as root: apt-get install ${need[*]})." >&2
  exit 1
fi
echo "Installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The distribution starts its own clusters and servers on install; the suite runs its own.
(command -v systemctl >/dev/null && systemctl stop postgresql redis-server) >/dev/null 2>&1 || true
service postgresql stop >/dev/null 2>&1 || true
service redis-server stop >/dev/null 2>&1 || true
