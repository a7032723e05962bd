#!/usr/bin/env bash
# Download Meta's official SAM2 / DINOv2 / SAM checkpoints into this folder.
#
# Usage: bash checkpoints/download_checkpoints.sh [SETS...] [OPTIONS...]
#
# Sets (combine freely; with none, --paper is used):
#   --paper     sam2_hiera_large.pt + dinov2/dinov2_vitl14_pretrain.pth (what the configs expect)
#   --small     sam2_hiera_tiny.pt  + dinov2/dinov2_vits14_pretrain.pth (quick runs, small GPUs)
#   --all       every SAM2.0 and SAM2.1 size, every DINOv2 variant (with and without registers),
#               and SAM ViT-H
# Options:
#   --sam2.1    also the SAM2.1 counterpart of every SAM2 file in the chosen sets
#   --sam-h     also sam_vit_h_4b8939.pth (box -> mask tool for custom datasets)
#   --dest DIR  download into DIR instead of the folder holding this script
#   --dry-run   print what would be downloaded (URL -> path) and download nothing
#   -h, --help  show this help
#
# Existing files are skipped. Each file is downloaded to a temporary name and renamed when
# complete, so an interrupted download never leaves a half-written checkpoint behind.
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

SAM2_BASE="https://dl.fbaipublicfiles.com/segment_anything_2"
DINOV2_BASE="https://dl.fbaipublicfiles.com/dinov2"
SAMH_URL="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth"

dest="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
want_paper=0
want_small=0
want_all=0
want_sam21=0
want_samh=0
dry_run=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --paper) want_paper=1 ;;
        --small) want_small=1 ;;
        --all) want_all=1 ;;
        --sam2.1) want_sam21=1 ;;
        --sam-h) want_samh=1 ;;
        --dry-run) dry_run=1 ;;
        --dest)
            [[ $# -ge 2 ]] || { echo "error: --dest needs a folder" >&2; exit 2; }
            dest="$2"
            shift
            ;;
        -h | --help) usage; exit 0 ;;
        *) echo "error: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
if [[ $want_paper -eq 0 && $want_small -eq 0 && $want_all -eq 0 ]]; then
    want_paper=1
fi

# ---- the list of files: "relative/path url" --------------------------------------------------
files=()
add() {  # add PATH URL, once
    local entry="$1 $2" existing
    for existing in "${files[@]+"${files[@]}"}"; do
        [[ "$existing" == "$entry" ]] && return 0
    done
    files+=("$entry")
}
add_sam2() {  # add_sam2 SIZE (tiny|small|base_plus|large)
    add "sam2_hiera_$1.pt" "$SAM2_BASE/072824/sam2_hiera_$1.pt"
    if [[ $want_sam21 -eq 1 || $want_all -eq 1 ]]; then
        add "sam2.1_hiera_$1.pt" "$SAM2_BASE/092824/sam2.1_hiera_$1.pt"
    fi
}
add_dinov2() {  # add_dinov2 LETTER (s|b|l|g) [SUFFIX (_reg4)]
    local name="dinov2_vit${1}14${2:-}_pretrain.pth"
    add "dinov2/$name" "$DINOV2_BASE/dinov2_vit${1}14/$name"
}

if [[ $want_paper -eq 1 ]]; then
    add_sam2 large
    add_dinov2 l
fi
if [[ $want_small -eq 1 ]]; then
    add_sam2 tiny
    add_dinov2 s
fi
if [[ $want_all -eq 1 ]]; then
    for size in tiny small base_plus large; do add_sam2 "$size"; done
    for letter in s b l g; do
        add_dinov2 "$letter"
        add_dinov2 "$letter" _reg4
    done
fi
if [[ $want_samh -eq 1 || $want_all -eq 1 ]]; then
    add "sam_vit_h_4b8939.pth" "$SAMH_URL"
fi

# ---- download ---------------------------------------------------------------------------------
partial=""
cleanup() {
    if [[ -n "$partial" ]]; then rm -f -- "$partial"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fetch() {  # fetch URL OUT
    if command -v wget > /dev/null 2>&1; then
        wget --tries=3 -O "$2" "$1"
    elif command -v curl > /dev/null 2>&1; then
        curl -fL --retry 3 -o "$2" "$1"
    else
        echo "error: neither wget nor curl is installed" >&2
        return 1
    fi
}

for entry in "${files[@]}"; do
    rel="${entry%% *}"
    url="${entry#* }"
    out="$dest/$rel"
    if [[ -s "$out" ]]; then
        echo "skip     $out (exists)"
        continue
    fi
    if [[ $dry_run -eq 1 ]]; then
        echo "download $url -> $out"
        continue
    fi
    mkdir -p "$(dirname "$out")"
    partial="$out.part"
    echo "download $url -> $out"
    fetch "$url" "$partial"
    mv -f -- "$partial" "$out"
    partial=""
done
if [[ $dry_run -eq 1 ]]; then
    echo "(dry run: nothing was downloaded)"
else
    echo "done: checkpoints are in $dest"
fi
