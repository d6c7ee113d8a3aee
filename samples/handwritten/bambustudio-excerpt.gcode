; HEADER_BLOCK_START
; BambuStudio 02.01.01.52
; model printing time: 5m 10s; total estimated time: 6m 24s
; total layer number: 20
; total filament length [mm] : 598.12
; total filament volume [cm^3] : 1438.60
; total filament weight [g] : 1.83
; filament_density: 1.27
; filament_diameter: 1.75
; max_z_height: 6.00
; filament: 1
; HEADER_BLOCK_END

; HAND-WRITTEN EXCERPT, NOT SLICER OUTPUT: BambuStudio's header and (much
; abridged) config block, written from its documented form; no Debian package
; ships BambuStudio. The moves are a placeholder.
; CONFIG_BLOCK_START
; curr_bed_type = Textured PEI Plate
; filament_colour = #000000
; filament_type = PETG
; layer_height = 0.3
; nozzle_diameter = 0.4
; nozzle_temperature_initial_layer = 255
; printer_model = Bambu Lab X1 Carbon
; CONFIG_BLOCK_END

M73 P0 R6
G28
G1 Z0.3 F720
G1 X60 Y10 E9 F1000
M73 P100 R0
M84
