{
  "targets": [
    {
      "target_name": "adapterkit",
      "sources": [
        "native/addon.cc",
        "native/common.cc",
        "native/meta.cc",
        "native/creation.cc",
        "native/ops_math.cc",
        "native/ops_shape.cc",
        "native/ops_reduce.cc",
        "native/ops_nn.cc",
        "native/autograd.cc",
        "native/fused.cc",
        "native/profiler.cc",
        "native/quant.cc",
        "native/distributed.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<!@(node scripts/find-libtorch.cjs include)"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_CPP_EXCEPTIONS",
        "_GLIBCXX_USE_CXX11_ABI=<!(node scripts/find-libtorch.cjs abi)"
      ],
      "cflags!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++14", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-frtti", "-O2", "-fopenmp-simd", "-Wno-unused-parameter", "-Wno-deprecated-declarations"],
      "libraries": [
        "-L<!(node scripts/find-libtorch.cjs libdir)",
        "-Wl,-rpath,<!(node scripts/find-libtorch.cjs libdir)",
        "-Wl,--no-as-needed",
        "-ltorch",
        "-ltorch_cpu",
        "-lc10"
      ]
    }
  ]
}
