#!/usr/bin/env bash
# Installs the Debian packages the integration brokers run from; idempotent, for CI on a fresh Debian 12.
#
# Only installs: the tests start private nodes of their own (integration/brokers/) and need no system
# service. Debian's postinst may try to start rabbitmq-server; where policy-rc.d forbids it (containers:
# "policy-rc.d denied execution of start") nothing starts, and that is fine. Where it does start, the
# system node takes ports 5672/15672/61613/25672/4369 and the harness then refuses with an error naming
# the port: stop that service or move the test ports (KQ_TEST_RABBITMQ_*_PORT).
# ActiveMQ Classic: `activemq` (it pulls in a headless JRE through default-jre-headless) plus xstream and
# jettison, which the statistics plugin's JSON replies need (integration/brokers/activemq.py links them
# into the broker's own folder). Its init script starts only the instances linked in
# /etc/activemq/instances-enabled/, which the package leaves empty: nothing starts, nothing to stop.
# The SQS emulators (moto, LocalStack) are not Debian packages: the harness installs them from PyPI into
# cached virtual environments on first use (integration/brokers/venvs.py).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    SUDO=(sudo)
fi

is_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

ensure_package() {
    local package=$1
    if is_installed "$package"; then
        echo "install-brokers: $package is already installed"
        return
    fi
    echo "install-brokers: installing $package"
    # `apt-get update` only when needed: it is the slow part, and the package lists are often current.
    if ! "${SUDO[@]}" apt-get install -y -q "$package"; then
        echo "install-brokers: install failed; updating the package lists and trying again"
        "${SUDO[@]}" apt-get update -q
        "${SUDO[@]}" apt-get install -y -q "$package"
    fi
}

ensure_package rabbitmq-server
ensure_package activemq
ensure_package libxstream-java
ensure_package libjettison-java

# Where the package's postinst did start the system node (no policy-rc.d), stop it: the tests run their
# own node on the same ports.
if pgrep -u rabbitmq -f "rabbit boot" >/dev/null 2>&1; then
    echo "install-brokers: stopping the system rabbitmq-server so that the test node can use its ports"
    "${SUDO[@]}" invoke-rc.d rabbitmq-server stop 2>/dev/null || "${SUDO[@]}" service rabbitmq-server stop \
        || "${SUDO[@]}" rabbitmqctl stop || true
fi
