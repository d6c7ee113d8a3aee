;FLAVOR:Marlin
;TIME:372
;Filament used: 0.61m
;Layer height: 0.3
;MINX:92.5
;MINY:92.5
;MINZ:0.3
;MAXX:107.5
;MAXY:107.5
;MAXZ:6
;Generated with Cura_SteamEngine 4.13.0
;Filament type = PLA
; HAND-WRITTEN EXCERPT, NOT SLICER OUTPUT: CuraEngine's Marlin-flavour header
; (the form Debian's cura-engine 4.13 writes; the "Filament type" line is what
; some printer profiles' start gcode adds). cura-engine itself is packaged,
; but its printer definitions come only with the `cura` package (128 packages
; with Qt), so samples/generate.sh does not run it. The moves are a placeholder.
M82 ;absolute extrusion mode
G28
G92 E0
;LAYER_COUNT:20
;LAYER:0
G0 F3000 X92.5 Y92.5 Z0.3
;TYPE:WALL-OUTER
G1 X107.5 Y92.5 E0.5
;TIME_ELAPSED:372.0
M84
;End of Gcode
