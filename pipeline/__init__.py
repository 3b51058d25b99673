"""DVC stage entry points: each reads its params section, calls ganlib, writes its outs."""
