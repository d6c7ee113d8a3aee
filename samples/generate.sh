#!/usr/bin/env bash
# Regenerates the sample gcode in samples/gcode/ with a real slicer.
#
# Two small models (written here as ASCII STL: a 15 mm calibration cube and a
# 24 mm hexagonal token) are sliced by Debian's PrusaSlicer, headless
# (`prusa-slicer --export-gcode`), for two printer profiles (mk4: a
# Prusa-MK4-like 250x210 bed; ender3: an Ender-3-V2-like 220x220 bed, other
# start gcode and speeds) and two materials (PLA, PETG), with coarse layers so
# each file stays small (well under 300 KB). The files are committed: tests and
# `./farm up` read them and need no slicer. Run this only to regenerate them:
#
#   samples/generate.sh          # apt-installs prusa-slicer if missing (root or sudo)
#
# Output: samples/gcode/MODEL_PROFILE_MATERIAL.gcode and samples/models/*.stl.
# samples/handwritten/ is NOT produced here: those are short excerpts written
# by hand from the slicers' documented formats (see samples/README.md).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="$HERE/gcode"
MODELS="$HERE/models"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

say() { printf 'generate.sh: %s\n' "$*" >&2; }
die() {
    say "$*"
    exit 1
}

as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run '$*'"
    fi
}

# ------------------------------------------------------------ the slicer ----
if ! command -v prusa-slicer >/dev/null 2>&1; then
    say "installing prusa-slicer (Debian package, about 100 MB with its libraries)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prusa-slicer
fi
SLICER_VERSION="$(dpkg-query -W -f='${Version}' prusa-slicer 2>/dev/null || echo unknown)"
say "slicer: prusa-slicer $SLICER_VERSION"

# -------------------------------------------------------------- models ----
mkdir -p "$MODELS" "$OUT"

# stl_box NAME X Y Z: an axis-aligned box as ASCII STL (12 facets).
stl_box() {
    python3 - "$@" <<'PY'
import sys
name, x, y, z = sys.argv[1], *map(float, sys.argv[2:5])
v = [(a, b, c) for a in (0, x) for b in (0, y) for c in (0, z)]
def idx(a, b, c): return v.index((a * x, b * y, c * z))
quads = [  # outward normals, counter-clockwise seen from outside
    ((0, 0, -1), [(0,0,0), (0,1,0), (1,1,0), (1,0,0)]),
    ((0, 0, 1),  [(0,0,1), (1,0,1), (1,1,1), (0,1,1)]),
    ((0, -1, 0), [(0,0,0), (1,0,0), (1,0,1), (0,0,1)]),
    ((0, 1, 0),  [(0,1,0), (0,1,1), (1,1,1), (1,1,0)]),
    ((-1, 0, 0), [(0,0,0), (0,0,1), (0,1,1), (0,1,0)]),
    ((1, 0, 0),  [(1,0,0), (1,1,0), (1,1,1), (1,0,1)]),
]
out = ["solid %s" % name]
for n, q in quads:
    p = [v[idx(*c)] for c in q]
    for tri in ((p[0], p[1], p[2]), (p[0], p[2], p[3])):
        out.append("  facet normal %g %g %g" % n)
        out.append("    outer loop")
        out += ["      vertex %g %g %g" % t for t in tri]
        out.append("    endloop")
        out.append("  endfacet")
out.append("endsolid %s" % name)
print("\n".join(out))
PY
}

# stl_prism NAME SIDES RADIUS HEIGHT: a regular prism as ASCII STL.
stl_prism() {
    python3 - "$@" <<'PY'
import math, sys
name, sides, r, h = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
ring = [(r + r * math.cos(2 * math.pi * i / sides), r + r * math.sin(2 * math.pi * i / sides))
        for i in range(sides)]
c = (r, r)
out = ["solid %s" % name]
def facet(n, a, b, d):
    out.append("  facet normal %g %g %g" % n)
    out.append("    outer loop")
    for p in (a, b, d):
        out.append("      vertex %.4f %.4f %.4f" % p)
    out.append("    endloop")
    out.append("  endfacet")
for i in range(sides):
    p, q = ring[i], ring[(i + 1) % sides]
    facet((0, 0, -1), (c[0], c[1], 0), (q[0], q[1], 0), (p[0], p[1], 0))
    facet((0, 0, 1), (c[0], c[1], h), (p[0], p[1], h), (q[0], q[1], h))
    mid = 2 * math.pi * (i + 0.5) / sides
    n = (math.cos(mid), math.sin(mid), 0)
    facet(n, (p[0], p[1], 0), (q[0], q[1], 0), (q[0], q[1], h))
    facet(n, (p[0], p[1], 0), (q[0], q[1], h), (p[0], p[1], h))
out.append("endsolid %s" % name)
print("\n".join(out))
PY
}

stl_box cube 15 15 15 >"$MODELS/cube.stl"
stl_prism token 6 12 3 >"$MODELS/token.stl"

# ------------------------------------------------------------ profiles ----
# Printer, filament and print settings in PrusaSlicer's config.ini form.
cat >"$WORK/printer-mk4.ini" <<'INI'
printer_settings_id = Printfarm MK4-like 0.4
printer_model = MK4
printer_notes = printfarm profile mk4
bed_shape = 0x0,250x0,250x210,0x210
max_print_height = 220
nozzle_diameter = 0.4
gcode_flavor = marlin2
use_relative_e_distances = 1
layer_gcode = G92 E0
retract_length = 0.8
start_gcode = M862.3 P "MK4" ; printer model check\nG90\nM83\nM140 S[first_layer_bed_temperature]\nM104 S[first_layer_temperature]\nM190 S[first_layer_bed_temperature]\nM109 S[first_layer_temperature]\nG28\nG1 Z0.3 F720\nG1 X60 E9 F1000\nG1 X100 E12.5 F1000\nG92 E0
end_gcode = G1 Z{max_layer_z + 10} F720\nM104 S0\nM140 S0\nM107\nG1 X0 Y200 F3600\nM84
INI
cat >"$WORK/printer-ender3.ini" <<'INI'
printer_settings_id = Printfarm Ender-3-V2-like 0.4
printer_model = Ender-3 V2
printer_notes = printfarm profile ender3
bed_shape = 0x0,220x0,220x220,0x220
max_print_height = 250
nozzle_diameter = 0.4
gcode_flavor = marlin
use_relative_e_distances = 0
retract_length = 5
retract_speed = 45
start_gcode = G90\nM82\nM140 S[first_layer_bed_temperature]\nM104 S[first_layer_temperature]\nM190 S[first_layer_bed_temperature]\nM109 S[first_layer_temperature]\nG28\nG92 E0\nG1 Z2.0 F3000\nG1 X0.1 Y20 Z0.3 F5000.0\nG1 X0.1 Y200.0 Z0.3 F1500.0 E15\nG92 E0
end_gcode = G91\nG1 E-2 F2700\nG1 Z10 F3000\nG90\nG1 X0 Y220\nM106 S0\nM104 S0\nM140 S0\nM84 X Y E
INI
cat >"$WORK/filament-PLA.ini" <<'INI'
filament_settings_id = Printfarm PLA black
filament_type = PLA
filament_colour = #000000
filament_density = 1.24
filament_cost = 25
filament_diameter = 1.75
temperature = 210
first_layer_temperature = 215
bed_temperature = 60
first_layer_bed_temperature = 60
INI
cat >"$WORK/filament-PETG.ini" <<'INI'
filament_settings_id = Printfarm PETG white
filament_type = PETG
filament_colour = #FFFFFF
filament_density = 1.27
filament_cost = 30
filament_diameter = 1.75
temperature = 240
first_layer_temperature = 235
bed_temperature = 85
first_layer_bed_temperature = 80
INI
cat >"$WORK/print.ini" <<'INI'
print_settings_id = Printfarm coarse 0.30
layer_height = 0.3
first_layer_height = 0.3
perimeters = 2
top_solid_layers = 3
bottom_solid_layers = 3
fill_density = 10%
fill_pattern = grid
gcode_comments = 0
gcode_label_objects = 0
skirts = 1
INI

# -------------------------------------------------------------- slice ----
n=0
for model in cube token; do
    for profile in mk4 ender3; do
        for material in PLA PETG; do
            out="$OUT/${model}_${profile}_${material}.gcode"
            prusa-slicer --export-gcode --loglevel 1 \
                --load "$WORK/printer-$profile.ini" --load "$WORK/filament-$material.ini" \
                --load "$WORK/print.ini" --center 100,100 \
                -o "$out" "$MODELS/$model.stl" >"$WORK/slice.log" 2>&1 ||
                {
                    cat "$WORK/slice.log" >&2
                    die "prusa-slicer failed on $model/$profile/$material"
                }
            size=$(stat -c %s "$out")
            [[ $size -lt 300000 ]] || die "$out is $size bytes: over the 300 KB budget"
            say "wrote ${out#"$HERE"/} ($size bytes)"
            n=$((n + 1))
        done
    done
done
say "done: $n files from prusa-slicer $SLICER_VERSION"
