"""Devices: what exists, what memory it offers, what counts as running out of it, and GPUs we can only name.

`parse` reads `device=`; `memory` reads NVML (by UUID), torch.cuda and the process RSS; `oom`
decides what counts as out of memory; `catalog` lists the GPUs and Jetson modules a plan can
target; `jetson` reads a Jetson board (model, unified memory, tegrastats).
"""
