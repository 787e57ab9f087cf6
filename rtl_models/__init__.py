"""Verilog of the BCF datapath, its cocotb bench and the synthesis script, shipped as package data.

Nothing here is imported by hdsim: ``hdsim.rtl.rtl_dir()`` finds this folder beside the
``hdsim`` package (in a checkout and in an installed wheel alike) and hands its files to
the simulator and to yosys.
"""
