"""Source-level knowledge from an object's DWARF (host side, pyelftools).

``model``: functions, inlined calls and the variables in scope at each BPF
instruction with their locations; ``types``: C types; ``location``: DWARF
expressions and their evaluation (both r10 offset conventions); ``frame``: the
StackSize clang-19's offsets need; ``values``/``format``: reading and printing
typed values.
"""
