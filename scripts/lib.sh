# Shared helpers of the scripts in this folder (sourced, not run).

# apt_install PACKAGE WHY MISSING: installs PACKAGE from Debian if we may
# (root with apt-get), else says MISSING is missing and exits.
apt_install() {
    local pkg=$1 why=$2 missing=$3
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing $pkg ($why)" >&2
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg") >/dev/null
    else
        echo "$missing is missing ($why): apt-get install $pkg" >&2
        exit 1
    fi
}

# need_apt COMMAND PACKAGE WHY: installs PACKAGE when COMMAND is missing.
need_apt() {
    command -v "$1" >/dev/null 2>&1 || apt_install "$2" "$3" "$1"
}

# need_pkg PACKAGE WHY: installs the Debian PACKAGE unless it is installed.
need_pkg() {
    dpkg -s "$1" >/dev/null 2>&1 || apt_install "$1" "$2" "$1"
}

# need_docker WHY: makes sure a Docker daemon answers, starting one (and
# installing Debian's docker.io first if there is no daemon at all) when we
# may; waits for it with a deadline. A machine can have the engine installed
# but not running (a CI box that boots without services).
need_docker() {
    local why=$1
    need_apt docker docker.io "$why"
    docker info >/dev/null 2>&1 && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "no Docker daemon answers at ${DOCKER_HOST:-unix:///var/run/docker.sock} ($why): start it (sudo service docker start)" >&2
        exit 1
    fi
    command -v dockerd >/dev/null 2>&1 || apt_install docker.io "$why" dockerd
    echo "starting the Docker daemon ($why); its log: /var/log/dockerd.log" >&2
    # Started directly, not through /etc/init.d/docker: that script remounts
    # cgroups and has been seen to report success for a daemon that never
    # answered.
    nohup dockerd >>/var/log/dockerd.log 2>&1 </dev/null &
    local deadline=$((SECONDS + 60))
    until docker info >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            echo "the Docker daemon did not answer within 60 s; the end of its log:" >&2
            tail -n 20 /var/log/dockerd.log /var/log/docker.log 2>/dev/null >&2
            exit 1
        fi
        sleep 0.5
    done
}

# need_pip COMMAND PACKAGE WHY: installs the PyPI PACKAGE when COMMAND is missing.
need_pip() {
    command -v "$1" >/dev/null 2>&1 && return 0
    command -v pip3 >/dev/null 2>&1 || need_apt pip3 python3-pip "pip installs $2"
    echo "installing $2 from PyPI ($3)" >&2
    pip3 install --quiet --disable-pip-version-check "$2" >/dev/null 2>&1 \
        || pip3 install --quiet --disable-pip-version-check --break-system-packages "$2" >/dev/null \
        || { echo "cannot install $2 with pip ($3)" >&2; exit 1; }
    command -v "$1" >/dev/null 2>&1 || { echo "$2 is installed but \`$1\` is not on PATH ($3)" >&2; exit 1; }
}

# need_pymod MODULE PACKAGE WHY: installs the PyPI PACKAGE when python3
# cannot import MODULE.
need_pymod() {
    python3 -c "import $1" >/dev/null 2>&1 && return 0
    echo "installing $2 from PyPI ($3)" >&2
    pip3 install --quiet --disable-pip-version-check "$2" >/dev/null 2>&1 \
        || pip3 install --quiet --disable-pip-version-check --break-system-packages "$2" >/dev/null \
        || { echo "cannot install $2 with pip ($3)" >&2; exit 1; }
}
