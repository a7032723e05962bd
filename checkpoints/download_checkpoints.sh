#!/usr/bin/env bash
# Download the official SAM2 / DINOv2 / SAM checkpoints, and the ablation encoders, into this folder.
#
# Usage: bash checkpoints/download_checkpoints.sh [SETS...] [OPTIONS...]
#
# Sets (combine freely; with none, --paper is used):
#   --paper     sam2_hiera_large.pt + dinov2/dinov2_vitl14_pretrain.pth (what the configs expect)
#   --small     sam2_hiera_tiny.pt  + dinov2/dinov2_vits14_pretrain.pth (quick runs, small GPUs)
#   --all       every SAM2.0 and SAM2.1 size, every DINOv2 variant (with and without registers),
#               and SAM ViT-H
#   --clip      OpenAI's CLIP ViT-B/32, B/16, L/14, L/14@336px (TorchScript archives, SHA-256
#               checked against the hash in OpenAI's URL), converted to clip/ViT-*.state_dict.pt
#   --pe        Perception Encoder PE-Spatial-L14-448 and -G14-448 from the Hugging Face hub
#               (Apache-2.0; the model pages may ask you to log in and accept the terms first)
#   --dinov3    DINOv3: Meta distributes the weights only after you accept the DINOv3 licence,
#               with personal download links; this lists the files the configs expect and
#               checks the ones present against the SHA-256 prefix in their names
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
want_clip=0
want_pe=0
want_dinov3=0
dry_run=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --paper) want_paper=1 ;;
        --small) want_small=1 ;;
        --all) want_all=1 ;;
        --sam2.1) want_sam21=1 ;;
        --sam-h) want_samh=1 ;;
        --clip) want_clip=1 ;;
        --pe) want_pe=1 ;;
        --dinov3) want_dinov3=1 ;;
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
if [[ $want_paper -eq 0 && $want_small -eq 0 && $want_all -eq 0 && $want_clip -eq 0 && $want_pe -eq 0 \
      && $want_dinov3 -eq 0 ]]; then
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

CLIP_BASE="https://openaipublic.azureedge.net/clip/models"
clip_models=(  # file  sha256 (the folder of OpenAI's URL)
    "ViT-B-32 40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"
    "ViT-B-16 5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"
    "ViT-L-14 b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"
    "ViT-L-14-336px 3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02"
)
if [[ $want_clip -eq 1 ]]; then
    for entry in "${clip_models[@]}"; do
        add "clip/${entry%% *}.pt" "$CLIP_BASE/${entry#* }/${entry%% *}.pt"
    done
fi
if [[ $want_pe -eq 1 ]]; then
    for name in PE-Spatial-L14-448 PE-Spatial-G14-448; do
        add "pe/$name.pt" "https://huggingface.co/facebook/$name/resolve/main/$name.pt"
    done
fi
dinov3_files=(
    dinov3_vits16_pretrain_lvd1689m-08c60483.pth dinov3_vits16plus_pretrain_lvd1689m-4057cbaa.pth
    dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth
    dinov3_vith16plus_pretrain_lvd1689m-7c1da9a5.pth dinov3_vit7b16_pretrain_lvd1689m-a955f4ea.pth
    dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth dinov3_vit7b16_pretrain_sat493m-a6675841.pth
)

sha256_of() {
    if command -v sha256sum > /dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1; else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

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
    if [[ "$url" == "$CLIP_BASE/"* ]]; then  # OpenAI's URL names the file's SHA-256
        want="${url#"$CLIP_BASE/"}"
        want="${want%%/*}"
        got="$(sha256_of "$partial")"
        if [[ "$got" != "$want" ]]; then
            echo "error: $url: SHA-256 $got differs from $want; the file was not kept" >&2
            exit 1
        fi
    fi
    mv -f -- "$partial" "$out"
    partial=""
done
if [[ $want_clip -eq 1 && $dry_run -eq 0 ]]; then
    for entry in "${clip_models[@]}"; do
        name="${entry%% *}"
        if [[ ! -s "$dest/clip/$name.state_dict.pt" ]]; then
            python -m no_time_to_train.tools.clip_state_dict "$dest/clip/$name.pt" "$dest/clip/$name.state_dict.pt"
        fi
    done
fi
if [[ $want_dinov3 -eq 1 ]]; then
    echo "DINOv3: accept the licence at https://ai.meta.com/resources/models-and-libraries/dinov3-downloads/,"
    echo "then download these files from the links Meta sends you into $dest/dinov3/checkpoints/:"
    for name in "${dinov3_files[@]}"; do
        out="$dest/dinov3/checkpoints/$name"
        if [[ -s "$out" ]]; then
            prefix="${name##*-}"
            prefix="${prefix%.pth}"
            if [[ $dry_run -eq 1 || "$(sha256_of "$out")" == "$prefix"* ]]; then
                echo "  present  $out"
            else
                echo "  DAMAGED  $out (its SHA-256 does not start with $prefix: download it again)"
            fi
        else
            echo "  missing  $out"
        fi
    done
fi
if [[ $dry_run -eq 1 ]]; then
    echo "(dry run: nothing was downloaded)"
else
    echo "done: checkpoints are in $dest"
fi
