# Shared helpers of the scripts in this folder (sourced, not run).

# need_apt COMMAND PACKAGE WHY: installs PACKAGE from Debian when COMMAND is
# missing and we may (root with apt-get), else explains and exits.
need_apt() {
    local cmd=$1 pkg=$2 why=$3
    command -v "$cmd" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing $pkg ($why)" >&2
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg") >/dev/null
    else
        echo "$cmd is missing ($why): apt-get install $pkg" >&2
        exit 1
    fi
}

# need_pkg PACKAGE WHY: installs the Debian PACKAGE unless it is installed.
need_pkg() {
    local pkg=$1 why=$2
    dpkg -s "$pkg" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing $pkg ($why)" >&2
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg") >/dev/null
    else
        echo "$pkg is missing ($why): apt-get install $pkg" >&2
        exit 1
    fi
}
