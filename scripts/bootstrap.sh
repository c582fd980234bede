#!/usr/bin/env bash
# Installs what the project needs on a Debian/Ubuntu machine (run as root). Safe to run again:
# every step is skipped when what it installs is already there and current.
set -euo pipefail
cd "$(dirname "$0")/.."

# chromium: Debian's browser, driven by Playwright in the console's browser test (never
# `playwright install`: nothing is downloaded outside the package registries).
apt_packages=(dovecot-core dovecot-pop3d dovecot-imapd dovecot-lmtpd postfix openssl make curl jq chromium)
missing=()
for package in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Postfix asks for a mail set-up at install time; we run our own private instance instead.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  # Without a policy-rc.d the packages would start system daemons on the public ports.
  added_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    added_policy=yes
  fi
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  [ -n "$added_policy" ] && rm -f /usr/sbin/policy-rc.d
fi

python=$(scripts/find-python)
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))'; then
  rm -rf .venv
  "$python" -m venv .venv
fi
stamp=.venv/.requirements.sha
want=$(cat requirements-dev.txt requirements-translator.txt layers/common/requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt -e .
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -r requirements-translator.txt
  echo "$want" > "$stamp"
fi
