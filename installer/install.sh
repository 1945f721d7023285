#!/bin/sh
# Sandstorm installer for Linux and macOS.
#
#   installer/install.sh [--prefix DIR] [--no-launch] [--uninstall]
#
# Creates a private virtual environment in the prefix, installs the right torch build
# (CUDA when an NVIDIA GPU answers, the default build with MPS on Apple Silicon, the CPU
# build otherwise) with the torchvision that matches it, installs Sandstorm from this checkout in editable mode (the app reads
# resources/ and models/ from the checkout), adds a launcher to the applications menu and
# opens the app. Re-running upgrades in place. Everything it creates is listed in
# <prefix>/install-manifest.txt, so --uninstall removes exactly that and never the user's
# models, gallery or settings (those live in the user's data folder, not in the prefix).
#
# Environment knobs (all optional):
#   SANDSTORM_PYTHON                  interpreter used to create the venv (default: python3)
#   SANDSTORM_TORCH                   auto | cpu | cuda | mps | keep (keep: leave torch and
#                                     torchvision alone; pip adds a torchvision if none is there)
#   SANDSTORM_TORCH_INDEX             PyTorch wheel index for the CUDA build (auto-chosen)
#   SANDSTORM_INSTALL_EXTRA_PIP_ARGS  extra arguments for every pip install
#   XDG_DATA_HOME                     where the launcher and icons go (Linux)

set -eu

TORCH_CPU_INDEX="https://download.pytorch.org/whl/cpu"
APP_ID="sandstorm"
MANIFEST_NAME="install-manifest.txt"

REPO=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd -P)
OS=$(uname -s)
ARCH=$(uname -m)
DATA_HOME=${XDG_DATA_HOME:-"$HOME/.local/share"}

say() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# torch and torchvision are pinned in one place, installer/constraints.txt ("torch==X.Y.Z",
# "torchvision==X.Y.Z"). Each torchvision release works with exactly one torch release.
CONSTRAINTS="$REPO/installer/constraints.txt"
pinned_version() { # pinned_version DIST: the version constraints.txt pins DIST to
    sed -n "s/^[[:space:]]*$1[[:space:]]*==[[:space:]]*\\([0-9][0-9A-Za-z.]*\\).*/\\1/p" "$CONSTRAINTS" 2>/dev/null | head -n 1
}
TORCH_VERSION=$(pinned_version torch)
[ -n "$TORCH_VERSION" ] || die "no torch==VERSION line in $CONSTRAINTS; restore it from a complete copy of Sandstorm"
TORCHVISION_VERSION=$(pinned_version torchvision)
[ -n "$TORCHVISION_VERSION" ] || die "no torchvision==VERSION line in $CONSTRAINTS; restore it from a complete copy of Sandstorm"

usage() {
    cat <<EOF
Usage: installer/install.sh [--prefix DIR] [--no-launch] [--uninstall]

Install Sandstorm from this checkout ($REPO) and open it.

  --prefix DIR   where the private Python environment goes
                 (default: $(default_prefix))
  --no-launch    install only; do not open the app afterwards
  --uninstall    remove what a previous install created (keeps models, gallery, settings)
  --print-torch-version
                 print the torch version this installer installs (from constraints.txt)
  --print-torchvision-version
                 print the torchvision version it installs beside torch
  -h, --help     show this help
EOF
}

default_prefix() {
    if [ "$OS" = "Darwin" ]; then
        printf '%s\n' "$HOME/Library/Application Support/Sandstorm-app"
    else
        printf '%s\n' "$DATA_HOME/sandstorm-app"
    fi
}

PREFIX=""
KEEP_TORCH=""
LAUNCH=1
UNINSTALL=0
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix)
            [ $# -ge 2 ] || die "--prefix needs a folder, e.g. --prefix ~/sandstorm"
            PREFIX=$2
            shift 2
            ;;
        --prefix=*)
            PREFIX=${1#--prefix=}
            shift
            ;;
        --no-launch)
            LAUNCH=0
            shift
            ;;
        --uninstall)
            UNINSTALL=1
            shift
            ;;
        --print-torch-version)
            printf '%s\n' "$TORCH_VERSION"
            exit 0
            ;;
        --print-torchvision-version)
            printf '%s\n' "$TORCHVISION_VERSION"
            exit 0
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            die "unknown option '$1'"
            ;;
    esac
done
[ -n "$PREFIX" ] || PREFIX=$(default_prefix)
case "$PREFIX" in
    /*) ;;
    *) PREFIX="$(pwd -P)/$PREFIX" ;;
esac
PREFIX=${PREFIX%/}
[ -n "$PREFIX" ] || die "refusing to use / as the install prefix"
VENV="$PREFIX/venv"
MANIFEST="$PREFIX/$MANIFEST_NAME"

# ---------------------------------------------------------------------------- manifest
# One entry a line: "<kind> <absolute path>". Kinds: file (delete), tree (delete the
# folder and its contents; only ever the venv or the .app bundle), dir (delete only if
# empty, because the user may have put something there since), cache (the menu's MIME
# cache that refreshing the menu created; deleted only when no other app is listed in it).

record() {
    mkdir -p "$PREFIX"
    printf '%s %s\n' "$1" "$2" >>"$MANIFEST"
}

# mkdir -p that records each folder it had to create, so uninstall can remove it again.
make_dir() {
    target=$1
    missing=""
    probe=$target
    while [ ! -d "$probe" ]; do
        missing="$probe
$missing"
        probe=$(dirname -- "$probe")
    done
    mkdir -p "$target"
    printf '%s' "$missing" | while IFS= read -r created; do
        if [ -n "$created" ] && [ "$created" != "$PREFIX" ]; then
            record dir "$created"
        fi
    done
}

install_file() { # install_file SOURCE DEST [MODE]
    make_dir "$(dirname -- "$2")"
    cp -- "$1" "$2"
    chmod "${3:-644}" "$2"
    record file "$2"
}

# ---------------------------------------------------------------------------- uninstall
uninstall() {
    if [ ! -f "$MANIFEST" ]; then
        die "no Sandstorm install found in $PREFIX (no $MANIFEST_NAME); pass --prefix if it is elsewhere"
    fi
    say "Removing the Sandstorm install listed in $MANIFEST"
    # Files and trees first, then folders deepest-first so parents empty out in order.
    while read -r kind path; do
        case "$path" in
            /*) ;;
            *) continue ;; # never act on a relative path from a damaged manifest
        esac
        case "$kind" in
            file) rm -f -- "$path" ;;
            tree)
                case "$path" in
                    "$PREFIX"/* | */Applications/Sandstorm.app) rm -rf -- "$path" ;;
                    *) warn "skipping $path (outside the install prefix)" ;;
                esac
                ;;
        esac
    done <"$MANIFEST"
    refresh_menus
    # The menu's MIME cache, when the install created it: it goes once no other entry is
    # in it (update-desktop-database just rewrote it without ours).
    grep '^cache /' "$MANIFEST" | sed 's/^cache //' | while IFS= read -r path; do
        if [ -f "$path" ] && ! grep -q -v -e '^\[MIME Cache\]$' -e '^$' "$path"; then
            rm -f -- "$path"
        fi
    done
    # Folders last, deepest first (reverse order sorts a child after its parent), and only
    # when empty: the prefix and its parents go too if the install created them.
    folders=$(grep '^dir /' "$MANIFEST" | sed 's/^dir //' || true)
    rm -f -- "$MANIFEST"
    printf '%s\n%s\n' "$folders" "$PREFIX" | LC_ALL=C sort -r -u | while IFS= read -r path; do
        if [ -n "$path" ]; then
            rmdir -- "$path" 2>/dev/null || true
        fi
    done
    [ ! -d "$PREFIX" ] || warn "$PREFIX is not empty; left in place"
    say "Sandstorm is uninstalled. Your models, gallery and settings were kept."
}

refresh_menus() {
    if [ "$OS" != "Darwin" ] && command -v update-desktop-database >/dev/null 2>&1; then
        update-desktop-database "$DATA_HOME/applications" >/dev/null 2>&1 || true
    fi
}

# ---------------------------------------------------------------------------- python
find_python() {
    PY=${SANDSTORM_PYTHON:-python3}
    command -v "$PY" >/dev/null 2>&1 ||
        die "Python 3.10 or newer is needed and '$PY' was not found; install Python from https://www.python.org/downloads/ (or your package manager) and run this again"
    if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
        found=$("$PY" -c 'import sys; print(".".join(map(str, sys.version_info[:3])))' 2>/dev/null || echo unknown)
        die "Sandstorm needs Python 3.10 or newer, but '$PY' is Python $found; install a newer Python or point SANDSTORM_PYTHON at one"
    fi
    "$PY" -c 'import venv, ensurepip' 2>/dev/null ||
        die "'$PY' cannot create virtual environments; on Debian/Ubuntu run: sudo apt install python3-venv"
}

make_venv() {
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import pip' 2>/dev/null; then
        say "Upgrading the existing environment in $VENV"
        return
    fi
    if [ -e "$VENV" ]; then
        warn "the environment in $VENV is broken; recreating it"
        rm -rf -- "$VENV"
    fi
    say "Creating a private Python environment in $VENV"
    make_dir "$PREFIX"
    "$PY" -m venv "$VENV"
    record tree "$VENV"
}

pip_install() {
    # Word splitting of the extra arguments is intended: they are a list of options.
    # shellcheck disable=SC2086
    "$VENV/bin/python" -m pip install ${SANDSTORM_INSTALL_EXTRA_PIP_ARGS:-} "$@"
}

installed_version() { # installed_version DIST: its version in the venv, or nothing
    "$VENV/bin/python" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1" 2>/dev/null || true
}

# The build label of a version ("cpu" of X.Y.Z+cpu, "cu130" of X.Y.Z+cu130; nothing for
# the unlabelled builds on PyPI).
build_label() {
    case "$1" in
        *+*) printf '%s\n' "${1#*+}" ;;
        *) printf '\n' ;;
    esac
}

# pinned_pair_installed LABEL...: true when the venv has the pinned torch and torchvision,
# both of the same build (a CUDA torchvision beside a CPU torch does not import) and that
# build's label matches one of the patterns LABEL ('' for an unlabelled build). Reads
# $current (torch's installed version); sets $current_tv.
pinned_pair_installed() {
    current_tv=$(installed_version torchvision)
    [ -n "$current" ] && [ -n "$current_tv" ] || return 1
    [ "${current%%+*}" = "$TORCH_VERSION" ] && [ "${current_tv%%+*}" = "$TORCHVISION_VERSION" ] || return 1
    label=$(build_label "$current")
    [ "$label" = "$(build_label "$current_tv")" ] || return 1
    for wanted in "$@"; do
        # The patterns are globs on purpose (cu* is any CUDA build).
        # shellcheck disable=SC2254
        case "$label" in
            $wanted) return 0 ;;
        esac
    done
    return 1
}

# ---------------------------------------------------------------------------- torch
# Prints the PyTorch CUDA index that matches the driver, or nothing when the driver is
# too old for any build we know of.
cuda_index() {
    if [ -n "${SANDSTORM_TORCH_INDEX:-}" ]; then
        printf '%s\n' "$SANDSTORM_TORCH_INDEX"
        return
    fi
    driver_cuda=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -n 1)
    major=${driver_cuda%%.*}
    minor=${driver_cuda#*.}
    [ -n "$major" ] || major=0
    [ -n "$minor" ] && [ "$minor" != "$driver_cuda" ] || minor=0
    if [ "$major" -ge 13 ]; then
        echo "https://download.pytorch.org/whl/cu130"
    elif [ "$major" -eq 12 ] && [ "$minor" -ge 8 ]; then
        echo "https://download.pytorch.org/whl/cu128"
    elif [ "$major" -eq 12 ] && [ "$minor" -ge 6 ]; then
        echo "https://download.pytorch.org/whl/cu126"
    fi
}

choose_torch() {
    choice=${SANDSTORM_TORCH:-auto}
    if [ "$choice" = "auto" ]; then
        if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
            choice=cuda
        elif [ "$OS" = "Darwin" ]; then
            choice=mps
        else
            choice=cpu
        fi
    fi
    printf '%s\n' "$choice"
}

install_torch() {
    flavour=$(choose_torch)
    current=$(installed_version torch)
    pair="torch $TORCH_VERSION and torchvision $TORCHVISION_VERSION"
    # torch and torchvision always go in one pip call, so the resolver cannot pair a
    # torchvision with another torch (or another build of it).
    case "$flavour" in
        keep)
            [ -n "$current" ] || die "SANDSTORM_TORCH=keep, but torch is not installed in $VENV"
            current_tv=$(installed_version torchvision)
            say "Keeping torch $current${current_tv:+ and torchvision $current_tv}"
            [ -n "$current_tv" ] ||
                warn "torchvision is not installed; pip will add the one that goes with torch $current"
            KEEP_TORCH=$current
            ;;
        cpu)
            if pinned_pair_installed cpu ''; then
                say "torch $current and torchvision $current_tv are already installed"
                return
            fi
            # PyTorch's CPU index labels its Linux builds +cpu; its macOS ones are unlabelled.
            cpu_label="+cpu"
            [ "$OS" != "Darwin" ] || cpu_label=""
            say "No NVIDIA GPU found: installing the CPU build of $pair"
            # A local or mirrored CPU wheel wins when pip is configured with one; otherwise
            # fetch it from PyTorch's CPU index (PyPI's Linux torch is the multi-GB CUDA one).
            # Quiet: on most machines there is none, and pip's resolver error would alarm.
            if pip_install "torch==$TORCH_VERSION+cpu" "torchvision==$TORCHVISION_VERSION+cpu" >/dev/null 2>&1; then
                say "Installed torch $TORCH_VERSION+cpu and torchvision $TORCHVISION_VERSION+cpu from pip's configured indexes"
                return
            fi
            if pip_install "torch==$TORCH_VERSION$cpu_label" "torchvision==$TORCHVISION_VERSION$cpu_label" \
                --index-url "$TORCH_CPU_INDEX"; then
                return
            fi
            # The CPU index cannot be reached (offline, a mirror only): take the build pip's
            # own indexes have, which on Linux is usually the CUDA one. It runs on the CPU.
            warn "could not get the CPU build from $TORCH_CPU_INDEX; installing $pair from pip's configured indexes instead, which on Linux may be the large CUDA build (several GB; it runs on the CPU too)"
            pip_install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" ||
                die "could not install $pair (CPU); check your internet connection"
            ;;
        cuda)
            index=$(cuda_index)
            if [ -z "$index" ]; then
                warn "the NVIDIA driver is too old for current CUDA builds of torch; update it for GPU speed"
                SANDSTORM_TORCH=cpu install_torch
                return
            fi
            if pinned_pair_installed 'cu*'; then
                say "torch $current and torchvision $current_tv (CUDA build) are already installed"
                return
            fi
            say "NVIDIA GPU found: installing $pair from $index"
            pip_install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" --index-url "$index" ||
                die "could not install the CUDA build of torch from $index; set SANDSTORM_TORCH=cpu to install the CPU build instead"
            ;;
        mps)
            if pinned_pair_installed ''; then
                say "torch $current and torchvision $current_tv are already installed"
                return
            fi
            if [ "$OS" = "Darwin" ] && [ "$ARCH" != "arm64" ]; then
                warn "Intel Macs have no GPU support in torch; Sandstorm will run on the CPU"
            fi
            say "Installing $pair (Metal/MPS on Apple Silicon)"
            pip_install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" ||
                die "could not install torch $TORCH_VERSION for $OS $ARCH; PyTorch publishes macOS builds for Apple Silicon only"
            ;;
        *)
            die "SANDSTORM_TORCH must be auto, cpu, cuda, mps or keep (got '$flavour')"
            ;;
    esac
}

# Installs Sandstorm itself without letting pip swap the torch installed above: pinned to
# constraints.txt, or, with SANDSTORM_TORCH=keep, to the torch that is there (pip then picks
# the torchvision that goes with it when there is none).
install_app() {
    if [ -n "$KEEP_TORCH" ]; then
        pip_install -e "$REPO" "torch==$KEEP_TORCH"
    else
        pip_install -c "$CONSTRAINTS" -e "$REPO"
    fi
}

# ---------------------------------------------------------------------------- launchers
# Escapes a path for a quoted argument of a .desktop Exec key (spec: \, ", ` and $ are
# backslash-escaped inside quotes, then the key's own string escaping doubles backslashes).
desktop_exec_quote() {
    printf '"%s"' "$(printf '%s' "$1" | sed -e 's/[\\"`$]/\\&/g' -e 's/\\/\\\\/g')"
}

install_linux_launcher() {
    apps="$DATA_HOME/applications"
    icons="$DATA_HOME/icons/hicolor"
    for size in 48 128 256; do
        install_file "$REPO/resources/icons/sandstorm-$size.png" \
            "$icons/${size}x${size}/apps/$APP_ID.png"
    done
    install_file "$REPO/resources/icons/sandstorm.svg" "$icons/scalable/apps/$APP_ID.svg"

    make_dir "$apps"
    desktop_file="$apps/$APP_ID.desktop"
    # Paths may hold any character, so substitute literally (awk index/substr, values read
    # from the environment: awk -v and sed would both reinterpret backslashes).
    SANDSTORM_EXEC=$(desktop_exec_quote "$VENV/bin/sandstorm") \
        SANDSTORM_TRY_EXEC=$(printf '%s' "$VENV/bin/sandstorm" | sed 's/\\/\\\\/g') \
        SANDSTORM_ICON=$APP_ID \
        awk '
        function literal(text, key, value,    out, at) {
            out = ""
            while ((at = index(text, key)) > 0) {
                out = out substr(text, 1, at - 1) value
                text = substr(text, at + length(key))
            }
            return out text
        }
        {
            line = literal($0, "@EXEC@", ENVIRON["SANDSTORM_EXEC"])
            line = literal(line, "@TRY_EXEC@", ENVIRON["SANDSTORM_TRY_EXEC"])
            print literal(line, "@ICON@", ENVIRON["SANDSTORM_ICON"])
        }
    ' "$REPO/installer/templates/sandstorm.desktop.in" >"$desktop_file"
    chmod 644 "$desktop_file"
    record file "$desktop_file"
    mime_cache="$apps/mimeinfo.cache"
    if [ ! -e "$mime_cache" ]; then
        refresh_menus
        [ ! -e "$mime_cache" ] || record cache "$mime_cache"
    else
        refresh_menus
    fi
    say "Added Sandstorm to the applications menu ($desktop_file)"
}

install_macos_launcher() {
    app="$HOME/Applications/Sandstorm.app"
    if [ -d "$app" ]; then
        rm -rf -- "$app" # ours from a previous run (listed in the manifest); rebuilt below
    else
        make_dir "$HOME/Applications"
    fi
    mkdir -p "$app/Contents/MacOS" "$app/Contents/Resources"
    record tree "$app"
    version=$("$VENV/bin/python" -c 'import desktop; print(desktop.__version__)')
    sed -e "s/@VERSION@/$version/g" "$REPO/installer/templates/Info.plist.in" \
        >"$app/Contents/Info.plist"
    {
        printf '#!/bin/sh\n'
        printf '# Opens Sandstorm from its private environment.\n'
        printf 'exec "%s" "$@"\n' "$VENV/bin/sandstorm"
    } >"$app/Contents/MacOS/Sandstorm"
    chmod 755 "$app/Contents/MacOS/Sandstorm"
    if command -v iconutil >/dev/null 2>&1 && command -v sips >/dev/null 2>&1; then
        iconset=$(mktemp -d)/sandstorm.iconset
        mkdir -p "$iconset"
        for size in 16 32 128 256; do
            sips -z "$size" "$size" "$REPO/resources/icons/sandstorm-256.png" \
                --out "$iconset/icon_${size}x${size}.png" >/dev/null
        done
        iconutil -c icns "$iconset" -o "$app/Contents/Resources/sandstorm.icns" ||
            warn "could not build the app icon; the launcher works without it"
        rm -rf -- "$(dirname -- "$iconset")"
    fi
    say "Added Sandstorm.app to $HOME/Applications"
}

launch() {
    if [ "$OS" = "Darwin" ]; then
        say "Opening Sandstorm"
        open "$HOME/Applications/Sandstorm.app" || warn "could not open the app; run $VENV/bin/sandstorm"
        return
    fi
    if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
        warn "no graphical session found (DISPLAY is not set); open Sandstorm from the menu or run $VENV/bin/sandstorm"
        return
    fi
    say "Opening Sandstorm"
    # Detached from this terminal, so closing it does not close the app.
    if command -v setsid >/dev/null 2>&1; then
        setsid "$VENV/bin/sandstorm" </dev/null >/dev/null 2>&1 &
    else
        nohup "$VENV/bin/sandstorm" </dev/null >/dev/null 2>&1 &
    fi
}

# ---------------------------------------------------------------------------- main
if [ "$UNINSTALL" -eq 1 ]; then
    uninstall
    exit 0
fi

if [ ! -f "$REPO/pyproject.toml" ] || [ ! -d "$REPO/desktop" ]; then
    die "run this script from a Sandstorm checkout (no pyproject.toml next to installer/)"
fi

say "Installing Sandstorm from $REPO into $PREFIX"
find_python
make_dir "$PREFIX"
if [ ! -f "$MANIFEST" ]; then
    : >"$MANIFEST"
fi
make_venv
install_torch
say "Installing Sandstorm and its libraries (diffusers, transformers, PySide6)"
install_app || die "pip could not install Sandstorm; see the messages above"

say "Checking the installed app"
"$VENV/bin/sandstorm" --version || die "the installed app does not start; run $VENV/bin/sandstorm --check for details"

if [ "$OS" = "Darwin" ]; then
    install_macos_launcher
else
    install_linux_launcher
fi
# Re-runs append the same entries again: keep the manifest tidy.
LC_ALL=C sort -u "$MANIFEST" -o "$MANIFEST"

say "Done. Start Sandstorm from your applications menu, or run: $VENV/bin/sandstorm"
say "Diagnostics: $VENV/bin/sandstorm --check   Uninstall: $REPO/installer/install.sh --uninstall${PREFIX:+ --prefix \"$PREFIX\"}"
if [ "$LAUNCH" -eq 1 ]; then
    launch
fi
