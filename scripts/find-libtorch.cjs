#!/usr/bin/env node
// Finds libtorch for the native build (binding.gyp calls this) and explains what to install when it
// cannot. Order: $LIBTORCH (an unpacked libtorch folder), then a Python torch install that ships its
// headers ($PYTHON or python3), then the system (Debian's libtorch-dev).
//   node scripts/find-libtorch.cjs include|libdir|abi|json
'use strict';
const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');

function hasLayout(root) {
  const inc = path.join(root, 'include');
  const lib = path.join(root, 'lib');
  return fs.existsSync(path.join(inc, 'ATen', 'ATen.h')) && fs.existsSync(path.join(lib, 'libtorch_cpu.so'));
}

// libtorch builds differ in the C++ ABI of std::string; a mismatch links but fails at load time, so
// read it from the library's symbols (c10's mangled names contain "__cxx11" with the new ABI).
function detectAbi(libdir) {
  if (process.env.LIBTORCH_CXX11_ABI === '0' || process.env.LIBTORCH_CXX11_ABI === '1') return process.env.LIBTORCH_CXX11_ABI;
  try {
    const out = execFileSync('nm', ['-D', '--defined-only', path.join(libdir, 'libc10.so')], { encoding: 'utf8', maxBuffer: 1 << 28 });
    return out.includes('__cxx11') ? '1' : '0';
  } catch {
    return '1';
  }
}

function fromRoot(root, how) {
  const libdir = path.join(root, 'lib');
  return {
    how,
    include: [path.join(root, 'include'), path.join(root, 'include', 'torch', 'csrc', 'api', 'include')],
    libdir,
    abi: detectAbi(libdir),
  };
}

function find() {
  const env = process.env.LIBTORCH;
  if (env) {
    if (!hasLayout(env)) {
      throw new Error(`LIBTORCH=${env} is not a libtorch folder: expected ${env}/include/ATen/ATen.h and ${env}/lib/libtorch_cpu.so`);
    }
    return fromRoot(env, 'LIBTORCH');
  }
  const pythons = [process.env.PYTHON, 'python3'].filter(Boolean);
  for (const py of pythons) {
    try {
      const root = execFileSync(py, ['-c', 'import torch, os; print(os.path.dirname(torch.__file__))'], {
        encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 60000,
      }).trim();
      if (root && hasLayout(root)) return fromRoot(root, `python torch (${py})`);
    } catch { /* no torch in this python: try the next place */ }
  }
  const sysInc = '/usr/include';
  const sysLib = ['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib']
    .find((d) => fs.existsSync(path.join(d, 'libtorch_cpu.so')));
  if (fs.existsSync(path.join(sysInc, 'ATen', 'ATen.h')) && sysLib) {
    return {
      how: 'system',
      include: [sysInc, path.join(sysInc, 'torch', 'csrc', 'api', 'include')],
      libdir: sysLib,
      abi: detectAbi(sysLib),
    };
  }
  throw new Error(
    'adapterkit: libtorch was not found.\n' +
    '  Debian/Ubuntu:   apt-get install -y libtorch-dev libopenblas0-pthread\n' +
    '  or a libtorch folder:   LIBTORCH=/path/to/libtorch npm install\n' +
    '  or a Python torch with headers:   PYTHON=/path/to/python npm install');
}

try {
  const r = find();
  const what = process.argv[2] || 'json';
  if (what === 'include') console.log(r.include.map((p) => JSON.stringify(p)).join(' '));
  else if (what === 'libdir') console.log(r.libdir);
  else if (what === 'abi') console.log(r.abi);
  else console.log(JSON.stringify(r, null, 2));
} catch (e) {
  console.error(e.message);
  process.exit(1);
}
