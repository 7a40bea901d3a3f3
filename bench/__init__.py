"""bgfetch benchmarks: direct curl, plain mitmdump and bgfetch side by side in one run (`make bench`)."""
