#!/usr/bin/env bash
# Build .bundle/: what curlrl needs on a lent GPU machine and that machine lacks, to carry there
# (see benchmarks/README.md, "On a lent GPU machine"):
#   bash scripts/device_bundle.sh 3.12     # the device's Python; 3.11 for a rehearsal here
# - wheels for that Python (x86-64 Linux) of the packages missing from the device image
#   (its list: /work/.library/device/KINDS.md; what curlrl uses from it: scripts/device_present.txt);
#   dm-control and mujoco slimmed to what dm_control.suite and the six PlaNet tasks load;
# - .bundle/gl/: the EGL loader packages (.debs) for MuJoCo's headless rendering on the GPU.
# Not bundled: labmaze (only dm_control.locomotion's mazes use it, dropped from the wheel),
# imageio-ffmpeg (a ~68 MB ffmpeg binary: runs there use video=false), etils[epath]
# extras and websockets (mujoco imports neither for the suite). Fails above MAX_MIB (default 40).
# Needs network (PyPI, Debian mirrors) and python3 with pip; downloads are cached in CACHE.
set -euo pipefail
cd "$(dirname "$0")/.."

PYV=${1:-3.12}
[[ $PYV =~ ^3\.(1[0-2])$ ]] || { echo "device_bundle: Python version must be 3.10, 3.11 or 3.12, got '$PYV'" >&2; exit 2; }
BUNDLE=${BUNDLE:-.bundle}
MAX_MIB=${MAX_MIB:-40}
CACHE=${CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/curlrl-bundle/py$PYV}
PY=${PYTHON:-python3}

# Pinned so that a bundle built twice is the same bundle. Each line is missing from the device
# image; checked with `unzip -p X.whl '*/METADATA' | grep ^Requires-Dist` that every requirement
# of these is either here or on the device (absl-py, numpy, scipy, lxml, protobuf, pyparsing,
# requests, setuptools, tqdm, attrs, wrapt, cloudpickle, typing-extensions, pandas, statsmodels,
# packaging, seaborn are).
WHEELS=(
  mujoco==3.17.0          # mujoco 4 breaks dm_control 1.0.50's suite.load
  dm-control==1.0.50
  dm-env==1.6
  dm-tree==0.1.10
  pyopengl==3.1.10        # dm_control's and mujoco's EGL bindings
  glfw==2.11.0            # required by dm-control's metadata; unused under MUJOCO_GL=egl
  gymnasium==1.4.0
  farama-notifications==0.0.6
  lz4==4.4.5              # curlrl's replay_compress on the CPU
  arch==7.2.0             # rliable's bootstrap (rliable 1.2.0 needs arch < 8: arch 8 refuses its random_state)
  submitit==1.5.4         # curlrl.jobs.bench imports it
)
SDISTS=(rliable==1.2.0)   # no wheel on PyPI: built here (pure Python)
# arch 7 fails to import under pandas 3 (and the device's pandas version is not recorded): the
# suite installs these beside the rest only where the machine's pandas is 3 or newer
PANDAS2=(pandas==2.3.3 pytz==2026.6 tzdata==2026.6)
GL_DEBS=(libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)

mkdir -p "$CACHE/wheels" "$CACHE/debs"
echo "device_bundle: downloading wheels for CPython $PYV (x86-64) into $CACHE"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do platforms+=(--platform "$p"); done
"$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version "$PYV" --implementation cp "${platforms[@]}" -d "$CACHE/wheels" "${WHEELS[@]}" "${PANDAS2[@]}"
"$PY" -m pip wheel -q --disable-pip-version-check --no-deps -w "$CACHE/wheels" "${SDISTS[@]}"

echo "device_bundle: downloading the EGL loader packages (amd64 .debs)"
if ! ls "$CACHE/debs"/*.deb >/dev/null 2>&1; then
  command -v apt-get >/dev/null || { echo "device_bundle: apt-get is needed to fetch ${GL_DEBS[*]}" >&2; exit 1; }
  lists="$CACHE/apt-lists"
  mkdir -p "$lists/partial"
  apt_opts=(-qq -oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists")
  [[ $(id -u) == 0 ]] && apt_opts+=(-oAPT::Sandbox::User=root)  # the cache is root's: no _apt sandbox warnings
  apt-get "${apt_opts[@]}" update
  (cd "$CACHE/debs" && apt-get "${apt_opts[@]}" download "${GL_DEBS[@]}")
fi

if [[ -e $BUNDLE && ! -f $BUNDLE/PYTHON_VERSION && -n $(ls -A "$BUNDLE") ]]; then
  echo "device_bundle: $BUNDLE exists and is not a bundle: not replacing it" >&2; exit 1
fi
rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/gl" "$BUNDLE/pandas2"
# add_wheel SPEC DIR: the cached wheel of SPEC for this Python, slimmed into DIR
add_wheel() {
  local spec=$1 dir=$2 name version stem w matches=()
  name=${spec%%==*}; version=${spec##*==}
  stem=$(echo "$name" | tr '-' '_')
  for w in "$CACHE/wheels/${stem}-${version}-"*.whl; do   # the cache may hold other builds too
    [[ -e $w ]] || continue
    case $w in *-py3-none-*|*-py2.py3-none-*|*-cp${PYV/./}-*) matches+=("$w");; esac
  done
  if [[ ${#matches[@]} -ne 1 ]]; then
    echo "device_bundle: expected one wheel of $spec for $PYV in $CACHE/wheels, found ${#matches[@]}" >&2
    exit 1
  fi
  "$PY" scripts/wheel_slim.py slim "${matches[0]}" "$dir" >/dev/null
}
for spec in "${WHEELS[@]}" "${SDISTS[@]}"; do add_wheel "$spec" "$BUNDLE"; done
for spec in "${PANDAS2[@]}"; do add_wheel "$spec" "$BUNDLE/pandas2"; done
for deb in "${GL_DEBS[@]}"; do
  cp "$CACHE/debs/${deb}_"*_amd64.deb "$BUNDLE/gl/"
done
echo "python $PYV" > "$BUNDLE/PYTHON_VERSION"

mib() { awk -v b="$1" 'BEGIN {printf "%.2f", b / 1048576}'; }
for w in "$BUNDLE"/*.whl "$BUNDLE"/pandas2/*.whl; do printf '  %6s MiB  %s\n' "$(mib "$(stat -c %s "$w")")" "${w#"$BUNDLE"/}"; done
printf '  %6s MiB  gl/: %s\n' "$(mib "$(du -cb "$BUNDLE"/gl/*.deb | tail -1 | cut -f1)")" "${GL_DEBS[*]}"
"$PY" scripts/wheel_slim.py size "$BUNDLE" "$MAX_MIB"

# A device call carries the tracked tree and the bundle together: at most 64 MiB.
tree=$(git ls-files -z | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
bundle=$(du -cb "$BUNDLE" | tail -1 | cut -f1)
echo "device_bundle: tracked tree $(mib "$tree") MiB + bundle = $(mib $((tree + bundle))) MiB (limit 64 MiB)"
if (( tree + bundle > 64 * 1048576 )); then
  echo "device_bundle: error: the tree and the bundle exceed the 64 MiB a device call carries" >&2
  exit 1
fi
