// qgnn_run: run a qgnn-deploy TVM library on a board without Python.
//
//   qgnn_run ARTIFACT_DIR [--warmup N] [--repeats N] [--threads N]
//
// Links only against the TVM runtime (libtvm_runtime.so + libtvm_ffi.so, shipped in the apache-tvm and
// apache-tvm-ffi wheels for the board's architecture; no compiler library, no Python).  Like
// runtimes/qgnn_bench.py it verifies the manifest (format, version, sha256 of every file), reads
// sample_input.npz, checks edge ids and in-degree, runs warm-up + timed repeats, compares the outputs
// with reference_output.npz bit for bit, detects qemu-user, and prints one JSON object on stdout.
// Exit status: 0 bit-exact, 1 outputs differ, 2 bad artifact / input (one "qgnn_run: error:" line).
#include <dlpack/dlpack.h>
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/extra/json.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/string.h>
#include <tvm/ffi/container/shape.h>
#include <tvm/ffi/container/tensor.h>

#include <limits.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;
using ffi::Tensor;

namespace {

// 64-byte aligned CPU buffers (TVM's kernels may assume that alignment for arguments).
struct AlignedCpuAlloc {
  void AllocData(DLTensor* t) {
    size_t n = ffi::GetDataSize(*t);
    t->data = std::aligned_alloc(64, std::max<size_t>(64, (n + 63) / 64 * 64));
    if (t->data == nullptr) throw std::bad_alloc();
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

struct BadInput : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw BadInput("cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// ---------------------------------------------------------------- SHA-256 (FIPS 180-4)
class Sha256 {
 public:
  Sha256() { Reset(); }
  void Update(const uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      buf_[len_++] = p[i];
      if (len_ == 64) {
        Block(buf_);
        len_ = 0;
      }
    }
    bits_ += static_cast<uint64_t>(n) * 8;
  }
  std::string HexDigest() {
    uint64_t bits = bits_;
    uint8_t pad = 0x80;
    Update(&pad, 1);
    uint8_t zero = 0;
    while (len_ != 56) Update(&zero, 1);
    uint8_t lenb[8];
    for (int i = 0; i < 8; ++i) lenb[i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
    Update(lenb, 8);
    char out[65];
    for (int i = 0; i < 8; ++i) snprintf(out + 8 * i, 9, "%08x", h_[i]);
    return std::string(out, 64);
  }

 private:
  static uint32_t Rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
  void Reset() {
    static const uint32_t init[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    std::copy(init, init + 8, h_);
    len_ = 0;
    bits_ = 0;
  }
  void Block(const uint8_t* b) {
    static const uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    uint32_t w[64];
    for (int i = 0; i < 16; ++i) {
      w[i] = (uint32_t(b[4 * i]) << 24) | (uint32_t(b[4 * i + 1]) << 16) | (uint32_t(b[4 * i + 2]) << 8) |
             uint32_t(b[4 * i + 3]);
    }
    for (int i = 16; i < 64; ++i) {
      uint32_t s0 = Rotr(w[i - 15], 7) ^ Rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      uint32_t s1 = Rotr(w[i - 2], 17) ^ Rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h_[0], bb = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
    for (int i = 0; i < 64; ++i) {
      uint32_t t1 = h + (Rotr(e, 6) ^ Rotr(e, 11) ^ Rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      uint32_t t2 = (Rotr(a, 2) ^ Rotr(a, 13) ^ Rotr(a, 22)) + ((a & bb) ^ (a & c) ^ (bb & c));
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = bb;
      bb = a;
      a = t1 + t2;
    }
    h_[0] += a;
    h_[1] += bb;
    h_[2] += c;
    h_[3] += d;
    h_[4] += e;
    h_[5] += f;
    h_[6] += g;
    h_[7] += h;
  }
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t len_;
  uint64_t bits_;
};

std::string Sha256Hex(const std::string& data) {
  Sha256 s;
  s.Update(reinterpret_cast<const uint8_t*>(data.data()), data.size());
  return s.HexDigest();
}

// ---------------------------------------------------------------- .npz (np.savez: stored zip of .npy)
struct Array {
  std::string dtype;  // NumPy name: float32, int64, ...
  DLDataType dl;
  std::vector<int64_t> shape;
  std::string bytes;
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

uint64_t Le(const std::string& s, uint64_t off, int n) {
  if (off > s.size() || static_cast<uint64_t>(n) > s.size() - off) throw BadInput("truncated zip structure");
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(s[off + i]);
  return v;
}

// a + b, refusing to wrap (every offset and size below comes from the file).
uint64_t Add(uint64_t a, uint64_t b, const std::string& what) {
  uint64_t r;
  if (__builtin_add_overflow(a, b, &r)) throw BadInput(what + ": size or offset overflows");
  return r;
}

Array ParseNpy(const std::string& name, const std::string& d) {
  if (d.size() < 10 || d.compare(0, 6, "\x93NUMPY") != 0) throw BadInput(name + " is not a .npy array");
  int major = static_cast<uint8_t>(d[6]);
  if (major < 1 || major > 3) throw BadInput(name + ": unsupported .npy version " + std::to_string(major));
  uint64_t hlen = major == 1 ? Le(d, 8, 2) : Le(d, 8, 4);
  uint64_t hstart = major == 1 ? 10 : 12;
  if (hlen > d.size() || hstart > d.size() - hlen) throw BadInput(name + ": truncated .npy header");
  std::string header = d.substr(hstart, hlen);
  auto field = [&](const std::string& key) {
    size_t p = header.find("'" + key + "'");
    size_t colon = p == std::string::npos ? p : header.find(':', p);
    if (colon == std::string::npos) throw BadInput(name + ": .npy header lacks " + key);
    return header.substr(colon + 1);
  };
  std::string descr = field("descr");
  size_t q0 = descr.find('\'');
  size_t q1 = q0 == std::string::npos ? q0 : descr.find('\'', q0 + 1);
  if (q1 == std::string::npos) throw BadInput(name + ": malformed .npy header (descr)");
  descr = descr.substr(q0 + 1, q1 - q0 - 1);
  std::string fortran = field("fortran_order");
  if (fortran.find("True") < fortran.find(',')) throw BadInput(name + ": Fortran-ordered arrays are not supported");
  static const std::map<std::string, std::pair<std::string, DLDataType>> kTypes = {
      {"<f4", {"float32", DLDataType{kDLFloat, 32, 1}}}, {"<i8", {"int64", DLDataType{kDLInt, 64, 1}}},
      {"<i4", {"int32", DLDataType{kDLInt, 32, 1}}},     {"<i2", {"int16", DLDataType{kDLInt, 16, 1}}},
      {"|i1", {"int8", DLDataType{kDLInt, 8, 1}}},       {"|u1", {"uint8", DLDataType{kDLUInt, 8, 1}}},
      {"<f8", {"float64", DLDataType{kDLFloat, 64, 1}}}};
  auto it = kTypes.find(descr);
  if (it == kTypes.end()) throw BadInput(name + ": unsupported dtype " + descr);
  Array a;
  a.dtype = it->second.first;
  a.dl = it->second.second;
  std::string shp = field("shape");
  size_t open = shp.find('('), close = shp.find(')');
  if (open == std::string::npos || close == std::string::npos || close < open) {
    throw BadInput(name + ": malformed .npy header (shape)");
  }
  shp = shp.substr(open + 1, close - open - 1);
  std::stringstream ss(shp);
  std::string tok;
  uint64_t numel = 1;
  while (std::getline(ss, tok, ',')) {
    size_t b = tok.find_first_not_of(" \t"), e = tok.find_last_not_of(" \t");
    if (b == std::string::npos) continue;  // the empty token after a trailing comma
    tok = tok.substr(b, e - b + 1);
    if (tok.size() > 18 || tok.find_first_not_of("0123456789") != std::string::npos) {
      throw BadInput(name + ": malformed .npy shape entry '" + tok + "'");
    }
    uint64_t dim = std::stoull(tok);
    if (__builtin_mul_overflow(numel, dim, &numel) || numel > (uint64_t(1) << 40)) {
      throw BadInput(name + ": .npy shape is too large (element count overflows)");
    }
    a.shape.push_back(static_cast<int64_t>(dim));
  }
  if (a.shape.size() > 8) throw BadInput(name + ": .npy array has more than 8 dimensions");
  uint64_t nbytes;
  if (__builtin_mul_overflow(numel, static_cast<uint64_t>(a.dl.bits / 8), &nbytes) ||
      nbytes > d.size() - hstart - hlen) {
    throw BadInput(name + ": truncated array data");
  }
  a.bytes = d.substr(hstart + hlen, nbytes);
  return a;
}

std::vector<std::pair<std::string, Array>> ReadNpz(const std::string& path) {
  std::string z = ReadFile(path);
  size_t eocd = z.size() >= 22 ? z.rfind(std::string("PK\x05\x06", 4)) : std::string::npos;
  if (eocd == std::string::npos) throw BadInput(path + " is not an .npz (zip) file");
  uint64_t count = Le(z, eocd + 10, 2), cd = Le(z, eocd + 16, 4);
  if (cd == 0xFFFFFFFFu || count == 0xFFFFu) {  // zip64 end of central directory
    size_t loc = z.rfind(std::string("PK\x06\x07", 4), eocd);
    if (loc == std::string::npos) throw BadInput(path + ": bad zip64 structure");
    uint64_t rec = Le(z, loc + 8, 8);
    count = Le(z, rec + 32, 8);
    cd = Le(z, rec + 48, 8);
  }
  std::vector<std::pair<std::string, Array>> out;
  if (count > 1024) throw BadInput(path + ": too many zip entries");
  uint64_t p = cd;
  for (uint64_t i = 0; i < count; ++i) {
    if (Le(z, p, 4) != 0x02014b50) throw BadInput(path + ": bad zip central directory");
    uint64_t method = Le(z, p + 10, 2), csize = Le(z, p + 20, 4), usize = Le(z, p + 24, 4);
    uint64_t nlen = Le(z, p + 28, 2), xlen = Le(z, p + 30, 2), clen = Le(z, p + 32, 2), off = Le(z, p + 42, 4);
    uint64_t name_at = p + 46, extra_end = Add(Add(name_at, nlen, path), xlen, path);
    if (extra_end > z.size()) throw BadInput(path + ": truncated zip central directory");
    std::string name = z.substr(name_at, nlen);
    for (uint64_t x = name_at + nlen; x + 4 <= extra_end;) {  // zip64 extra: sizes / offset
      uint64_t id = Le(z, x, 2), sz = Le(z, x + 2, 2);
      if (id == 1) {
        uint64_t q = x + 4;
        if (usize == 0xFFFFFFFFu) usize = Le(z, q, 8), q += 8;
        if (csize == 0xFFFFFFFFu) csize = Le(z, q, 8), q += 8;
        if (off == 0xFFFFFFFFu) off = Le(z, q, 8);
      }
      x += 4 + sz;
    }
    uint64_t data = Add(Add(Add(off, 30, path), Le(z, Add(off, 26, path), 2), path), Le(z, Add(off, 28, path), 2), path);
    if (data > z.size() || csize > z.size() - data) throw BadInput(path + ": truncated zip entry " + name);
    // deflate expands at most ~1032x; a larger claimed size is a lie that would only allocate memory
    if (usize > (uint64_t(1) << 34) || (method == 8 && usize > 1032 * csize + 1024) || (method == 0 && usize != csize)) {
      throw BadInput(path + ": implausible size for zip entry " + name);
    }
    std::string raw;
    if (method == 0) {  // np.savez
      raw = z.substr(data, csize);
    } else if (method == 8) {  // np.savez_compressed: raw deflate
      raw.resize(usize);
      z_stream st{};
      if (inflateInit2(&st, -MAX_WBITS) != Z_OK) throw BadInput("zlib inflateInit2 failed");
      st.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(z.data() + data));
      st.avail_in = static_cast<uInt>(csize);
      st.next_out = reinterpret_cast<Bytef*>(raw.data());
      st.avail_out = static_cast<uInt>(usize);
      int rc = inflate(&st, Z_FINISH);
      inflateEnd(&st);
      if (rc != Z_STREAM_END || st.total_out != usize) throw BadInput(path + ": corrupt zip entry " + name);
    } else {
      throw BadInput(path + ": zip compression method " + std::to_string(method) + " is not supported");
    }
    std::string key = name.size() > 4 && name.substr(name.size() - 4) == ".npy" ? name.substr(0, name.size() - 4)
                                                                                 : name;
    out.emplace_back(key, ParseNpy(path + ":" + name, raw));
    p = Add(extra_end, clen, path);
  }
  return out;
}

// ---------------------------------------------------------------- helpers
std::string JsonStr(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    o += c;
  }
  return o + "\"";
}

std::string ReadText(const char* path) {
  std::ifstream in(path);
  std::ostringstream ss;
  if (in) ss << in.rdbuf();
  return ss.str();
}

long StatusKb(const std::string& key) {
  std::string s = ReadText("/proc/self/status");
  size_t p = s.find(key + ":");
  return p == std::string::npos ? -1 : std::atol(s.c_str() + p + key.size() + 1);
}

bool Emulated(std::string* why) {
  std::string comm = ReadText("/proc/self/comm");
  if (comm.rfind("qemu", 0) == 0) {
    *why = "/proc/self/comm is " + comm.substr(0, comm.find('\n'));
    return true;
  }
  std::string cpu = ReadText("/proc/cpuinfo");
#if defined(__aarch64__)
  if (cpu.find("GenuineIntel") != std::string::npos || cpu.find("AuthenticAMD") != std::string::npos) {
    *why = "aarch64 binary but /proc/cpuinfo describes an x86 CPU";
    return true;
  }
#endif
  if (cpu.find("qemu") != std::string::npos) {
    *why = "/proc/cpuinfo names qemu";
    return true;
  }
  return false;
}

double Pct(const std::vector<double>& v, double q) {  // v sorted ascending; linear interpolation
  double pos = (v.size() - 1) * q / 100.0;
  size_t lo = static_cast<size_t>(pos), hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - lo);
}

// ---------------------------------------------------------------- the input contract (validation.py in C++)
std::string RealPath(const std::string& p) {  // canonical absolute path, "" when it does not exist
  char buf[PATH_MAX];
  return realpath(p.c_str(), buf) ? std::string(buf) : std::string();
}

struct InputSpec {
  std::string name;
  std::string dtype;                                   // "" = not recorded
  std::vector<std::pair<int64_t, std::string>> shape;  // (fixed size or -1, symbol)
  bool has_shape = false;
};

struct Limits {
  int64_t max_in_degree = -1, num_nodes = -1, num_edges = -1;  // -1 = not recorded
};

struct Facts {
  int64_t num_nodes = -1, num_edges = -1, max_in_degree = 0;
};

std::string Repr(const ffi::Any& v) {  // what Python's repr() would print for a JSON value
  if (auto s = v.try_cast<ffi::String>()) return "'" + std::string(*s) + "'";
  if (auto b = v.try_cast<bool>()) return *b ? "True" : "False";
  if (auto d = v.try_cast<double>()) {
    std::ostringstream o;
    o << *d;
    return o.str();
  }
  return "<non-scalar>";
}

int64_t RecordedInt(const ffi::Any& v, const std::string& key) {
  if (v == nullptr) return -1;
  if (v.type_index() == ffi::TypeIndex::kTVMFFIInt) {
    int64_t i = v.cast<int64_t>();
    if (i >= 0) return i;
    throw BadInput("the model records " + key + " = " + std::to_string(i) +
                   ", which is not a non-negative integer (corrupt manifest or graph metadata)");
  }
  throw BadInput("the model records " + key + " = " + Repr(v) +
                 ", which is not a non-negative integer (corrupt manifest or graph metadata)");
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string o = "[";
  for (size_t i = 0; i < shape.size(); ++i) o += (i ? ", " : "") + std::to_string(shape[i]);
  return o + "]";
}

Facts ValidateFeeds(const std::vector<InputSpec>& specs, const Limits& lim, const std::map<std::string, Array>& in) {
  std::string names;
  for (const auto& sp : specs) names += (names.empty() ? "" : ", ") + sp.name;
  std::string missing, extra;
  for (const auto& sp : specs) {
    if (!in.count(sp.name)) missing += (missing.empty() ? "" : ", ") + sp.name;
  }
  if (!missing.empty()) throw BadInput("missing input(s) " + missing + " (the model takes " + names + ")");
  for (const auto& kv : in) {
    bool known = false;
    for (const auto& sp : specs) known = known || sp.name == kv.first;
    if (!known) extra += (extra.empty() ? "" : ", ") + kv.first;
  }
  if (!extra.empty()) throw BadInput("unexpected input(s) " + extra + " (the model takes " + names + ")");
  std::map<std::string, int64_t> dims;
  for (const auto& sp : specs) {
    const Array& a = in.at(sp.name);
    if (!sp.dtype.empty() && a.dtype != sp.dtype) {
      throw BadInput("input " + sp.name + " has dtype " + a.dtype + ", the model expects " + sp.dtype);
    }
    if (sp.has_shape) {
      if (a.shape.size() != sp.shape.size()) {
        std::string want = "[";
        for (size_t i = 0; i < sp.shape.size(); ++i) {
          want += (i ? ", " : "") +
                  (sp.shape[i].first >= 0 ? std::to_string(sp.shape[i].first) : "'" + sp.shape[i].second + "'");
        }
        throw BadInput("input " + sp.name + " has rank " + std::to_string(a.shape.size()) + " (shape " +
                       ShapeText(a.shape) + "), the model expects rank " + std::to_string(sp.shape.size()) + " " +
                       want + "]");
      }
      for (size_t ax = 0; ax < sp.shape.size(); ++ax) {
        int64_t got = a.shape[ax];
        if (sp.shape[ax].first >= 0 && sp.shape[ax].first != got) {
          throw BadInput("input " + sp.name + " has " + std::to_string(got) + " in dimension " + std::to_string(ax) +
                         ", the model expects " + std::to_string(sp.shape[ax].first));
        }
        const std::string& sym = sp.shape[ax].second;
        if (!sym.empty()) {
          auto it = dims.emplace(sym, got).first;
          if (it->second != got) {
            throw BadInput("input " + sp.name + " has " + std::to_string(got) + " in dimension " + std::to_string(ax) +
                           ", but " + sym + " = " + std::to_string(it->second) + " from an earlier input");
          }
        }
      }
    }
    if (a.dl.code == kDLFloat) {
      bool finite = true;
      if (a.dl.bits == 32) {
        const float* f = reinterpret_cast<const float*>(a.bytes.data());
        for (int64_t k = 0; k < a.numel() && finite; ++k) finite = std::isfinite(f[k]);
      } else {
        const double* f = reinterpret_cast<const double*>(a.bytes.data());
        for (int64_t k = 0; k < a.numel() && finite; ++k) finite = std::isfinite(f[k]);
      }
      if (!finite) throw BadInput("input " + sp.name + " contains NaN or infinite values");
    }
  }
  Facts facts;
  if (dims.count("N")) {
    facts.num_nodes = dims["N"];
  } else {
    for (const auto& sp : specs) {
      const Array& a = in.at(sp.name);
      if (sp.name != "edge_index" && sp.name != "batch" && !a.shape.empty()) {
        facts.num_nodes = a.shape[0];
        break;
      }
    }
  }
  int64_t n = facts.num_nodes;
  if (lim.num_nodes >= 0 && n >= 0 && lim.num_nodes != n) {
    throw BadInput("graph has " + std::to_string(n) + " nodes, but this model has per-node parameters for exactly " +
                   std::to_string(lim.num_nodes) + " nodes");
  }
  if (in.count("edge_index")) {
    const Array& ei = in.at("edge_index");
    if ((ei.dl.code != kDLInt && ei.dl.code != kDLUInt) || ei.shape.size() != 2 || ei.shape[0] != 2) {
      throw BadInput("edge_index must be an integer array of shape [2, E], got " + ei.dtype + " " +
                     ShapeText(ei.shape));
    }
    if (ei.dtype != "int64") throw BadInput("input edge_index has dtype " + ei.dtype + ", the model expects int64");
    int64_t e = ei.shape[1];
    facts.num_edges = e;
    const int64_t* v = reinterpret_cast<const int64_t*>(ei.bytes.data());
    int64_t lo = 0, hi = 0;
    for (int64_t k = 0; k < 2 * e; ++k) {
      lo = k ? std::min(lo, v[k]) : v[k];
      hi = k ? std::max(hi, v[k]) : v[k];
    }
    int64_t bound = n >= 0 ? n : (int64_t(1) << 31);
    if (e > 0 && (lo < 0 || hi >= bound)) {
      int64_t bad = lo < 0 ? lo : hi;
      if (n >= 0) {
        throw BadInput("edge_index holds node id " + std::to_string(bad) + ", outside [0, " + std::to_string(n) +
                       ") for a graph of " + std::to_string(n) + " nodes");
      }
      throw BadInput("edge_index holds node id " + std::to_string(bad) + ", outside [0, 2^31)");
    }
    std::vector<int64_t> deg(e > 0 ? static_cast<size_t>(std::max<int64_t>(n, hi + 1)) : 0, 0);
    for (int64_t k = e; k < 2 * e; ++k) facts.max_in_degree = std::max(facts.max_in_degree, ++deg[v[k]]);
    if (lim.max_in_degree >= 0 && facts.max_in_degree > lim.max_in_degree) {
      throw BadInput("a node has in-degree " + std::to_string(facts.max_in_degree) +
                     ", above the model's max_in_degree " + std::to_string(lim.max_in_degree) +
                     " (its int32 accumulators are only proven safe up to that)");
    }
  }
  if (in.count("batch")) {
    const Array& b = in.at("batch");
    if ((b.dl.code != kDLInt && b.dl.code != kDLUInt) || b.shape.size() != 1) {
      throw BadInput("batch must be a 1-D integer array, got " + b.dtype + " " + ShapeText(b.shape));
    }
    if (b.dtype != "int64") throw BadInput("input batch has dtype " + b.dtype + ", the model expects int64");
    const int64_t* v = reinterpret_cast<const int64_t*>(b.bytes.data());
    if (b.numel() > 0) {
      int64_t lo = *std::min_element(v, v + b.numel()), hi = *std::max_element(v, v + b.numel());
      if (lo < 0 || (n >= 0 && hi >= std::max<int64_t>(n, 1))) {
        throw BadInput("batch holds graph id " + std::to_string(lo < 0 ? lo : hi) + ", outside [0, " +
                       std::to_string(n) + ") for " + std::to_string(n) + " nodes");
      }
    }
  }
  if (lim.num_edges >= 0 && facts.num_edges >= 0 && facts.num_edges != lim.num_edges) {
    throw BadInput("graph has " + std::to_string(facts.num_edges) + " edges, this model was compiled for exactly " +
                   std::to_string(lim.num_edges));
  }
  return facts;
}

int Run(int argc, char** argv) {
  if (argc < 2) throw BadInput("usage: qgnn_run ARTIFACT_DIR [--warmup N] [--repeats N] [--threads N]");
  std::string dir = argv[1];
  int warmup = 10, repeats = 50, threads = 0;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) throw BadInput("option " + a + " needs a value");
    int v = std::atoi(argv[++i]);
    if (a == "--warmup" && v >= 0) {
      warmup = v;
    } else if (a == "--repeats" && v >= 1) {
      repeats = v;
    } else if (a == "--threads" && v >= 1) {
      threads = v;
    } else {
      throw BadInput("bad option " + a + " " + argv[i]);
    }
  }
  // The runtime sizes its thread pool on first use; set this before anything runs.
  if (threads) setenv("TVM_NUM_THREADS", std::to_string(threads).c_str(), 1);

  // -- manifest: its own checksum line, then format, version and every file (confined to the directory)
  std::string real_dir = RealPath(dir);
  if (real_dir.empty()) throw BadInput(dir + ": not a directory");
  std::string manifest_text = ReadFile(dir + "/manifest.json");
  ffi::String err;
  ffi::json::Value doc = ffi::json::Parse(manifest_text, &err);
  if (!err.empty()) throw BadInput(dir + "/manifest.json: unreadable manifest (" + std::string(err) + ")");
  auto man = doc.try_cast<ffi::json::Object>();
  if (!man.has_value()) throw BadInput(dir + "/manifest.json: not a qgnn artifact manifest");
  auto get = [&](const char* k) -> ffi::Any { return man->count(k) ? man->at(k) : ffi::Any(); };
  auto fmt = get("format").try_cast<ffi::String>();
  if (!fmt.has_value() || std::string(*fmt) != "qgnn-artifact") {
    throw BadInput(dir + "/manifest.json: not a qgnn artifact manifest");
  }
  auto ver = get("format_version").try_cast<int64_t>();
  if (!ver.has_value() || *ver != 1) throw BadInput(dir + ": artifact format version is not 1; re-export");
  {
    std::ifstream sum_in(dir + "/manifest.sha256", std::ios::binary);
    if (!sum_in) throw BadInput(dir + ": no manifest.sha256 (re-export the artifact)");
    std::string want;
    sum_in >> want;
    if (want != Sha256Hex(manifest_text)) {
      throw BadInput(dir + ": checksum mismatch for manifest.json (file modified after export)");
    }
  }
  auto files = get("files").try_cast<ffi::json::Object>();
  if (!files.has_value() || files->size() == 0) throw BadInput(dir + "/manifest.json: manifest lists no files");
  std::map<std::string, std::string> by_role;
  for (const auto& kv : *files) {
    auto rel_s = kv.first.try_cast<ffi::String>();
    auto entry = kv.second.try_cast<ffi::json::Object>();
    std::string rel = rel_s.has_value() ? std::string(*rel_s) : std::string("?");
    std::optional<ffi::String> sha, role;
    if (entry.has_value() && entry->count("sha256")) sha = entry->at("sha256").try_cast<ffi::String>();
    if (entry.has_value() && entry->count("role")) role = entry->at("role").try_cast<ffi::String>();
    if (!rel_s.has_value() || !sha.has_value() || !role.has_value()) {
      throw BadInput(dir + "/manifest.json: malformed entry for '" + rel + "' in 'files' (want sha256, bytes, role)");
    }
    // Canonicalise (symlinks, "..") and require the result to stay inside the artifact directory.
    std::string real = RealPath(dir + "/" + rel);
    bool inside = real.size() > real_dir.size() && real.compare(0, real_dir.size(), real_dir) == 0 &&
                  real[real_dir.size()] == '/';
    if (rel.empty() || rel[0] == '/' || rel.find("..") != std::string::npos || (!real.empty() && !inside)) {
      throw BadInput(dir + "/manifest.json: file name '" + rel + "' escapes the artifact directory");
    }
    if (real.empty()) throw BadInput(dir + ": file " + rel + " listed in the manifest is missing");
    if (Sha256Hex(ReadFile(real)) != std::string(*sha)) {
      throw BadInput(dir + ": checksum mismatch for " + rel + " (file modified after export)");
    }
    if (!by_role.count(std::string(*role))) by_role[std::string(*role)] = real;
  }
  for (const char* r : {"tvm_library", "sample_input", "reference_output"}) {
    if (!by_role.count(r)) throw BadInput(dir + ": the artifact has no " + std::string(r));
  }
  // The model's inputs, in the library's argument order (input_order when recorded).
  std::vector<InputSpec> specs;
  if (auto ins = get("inputs").try_cast<ffi::json::Array>()) {
    for (const auto& v : *ins) {
      auto o = v.try_cast<ffi::json::Object>();
      if (!o.has_value() || !o->count("name")) throw BadInput(dir + "/manifest.json: malformed 'inputs' entry");
      InputSpec sp;
      auto name = o->at("name").try_cast<ffi::String>();
      if (!name.has_value()) throw BadInput(dir + "/manifest.json: malformed 'inputs' entry");
      sp.name = *name;
      if (o->count("dtype")) {
        auto dt = o->at("dtype").try_cast<ffi::String>();
        if (!dt.has_value()) throw BadInput(dir + "/manifest.json: malformed 'inputs' entry");
        sp.dtype = *dt;
      }
      if (o->count("shape")) {
        auto shape = o->at("shape").try_cast<ffi::json::Array>();
        if (!shape.has_value()) throw BadInput(dir + "/manifest.json: malformed 'inputs' entry");
        sp.has_shape = true;
        for (const auto& d : *shape) {
          if (auto iv = d.try_cast<int64_t>()) {
            sp.shape.emplace_back(*iv, "");
          } else if (auto sv = d.try_cast<ffi::String>()) {
            sp.shape.emplace_back(-1, std::string(*sv));
          } else {
            throw BadInput(dir + "/manifest.json: malformed 'inputs' shape");
          }
        }
      }
      specs.push_back(sp);
    }
  }
  std::vector<std::string> order;
  if (auto io = get("input_order").try_cast<ffi::json::Array>()) {
    for (const auto& n : *io) {
      auto sv = n.try_cast<ffi::String>();
      if (!sv.has_value()) throw BadInput(dir + "/manifest.json: malformed 'input_order'");
      order.push_back(std::string(*sv));
    }
  } else {
    for (const auto& sp : specs) order.push_back(sp.name);
  }
  Limits limits;
  limits.max_in_degree = RecordedInt(get("max_in_degree"), "max_in_degree");
  limits.num_nodes = RecordedInt(get("num_nodes"), "num_nodes");
  limits.num_edges = RecordedInt(get("num_edges"), "num_edges");

  // -- inputs: the same contract as qgnn_deploy/validation.py (same messages)
  auto sample = ReadNpz(by_role["sample_input"]);
  std::map<std::string, Array> inputs(sample.begin(), sample.end());
  std::string source = by_role["sample_input"].substr(by_role["sample_input"].rfind('/') + 1);
  if (specs.empty()) {
    for (auto& kv : sample) specs.push_back(InputSpec{kv.first, "", {}, false});
  }
  if (order.empty()) {
    for (const auto& sp : specs) order.push_back(sp.name);
  }
  Facts facts;
  try {
    facts = ValidateFeeds(specs, limits, inputs);
  } catch (const BadInput& e) {
    throw BadInput(source + ": " + e.what());
  }
  for (const auto& n : order) {
    if (!inputs.count(n)) throw BadInput(source + ": missing input(s) " + n);
  }
  int64_t num_nodes = facts.num_nodes, num_edges = facts.num_edges, max_deg = facts.max_in_degree;

  // -- load the library and the Relax VM
  DLDevice dev{kDLCPU, 0};
  auto t_load = std::chrono::steady_clock::now();
  ffi::Module lib = ffi::Module::LoadFromFile(by_role["tvm_library"]);
  auto load_exec = lib->GetFunction("vm_load_executable");
  if (!load_exec.has_value()) throw BadInput(by_role["tvm_library"] + " is not a Relax VM library");
  ffi::Module vm = (*load_exec)().cast<ffi::Module>();
  const int kPooled = 2;  // tvm::runtime::memory::AllocatorType::kPooled
  (*vm->GetFunction("vm_initialization"))(static_cast<int>(kDLCPU), 0, kPooled, static_cast<int>(kDLCPU), 0,
                                          kPooled);
  ffi::Function main_fn = vm->GetFunction("main").value();
  std::vector<Tensor> args;
  for (const auto& n : order) {
    const Array& a = inputs[n];
    Tensor t = Tensor::FromNDAlloc(AlignedCpuAlloc(), ffi::Shape(a.shape), a.dl, dev);
    std::memcpy(t.data_ptr(), a.bytes.data(), a.bytes.size());
    args.push_back(t);
  }
  std::vector<ffi::AnyView> packed(args.begin(), args.end());
  auto call = [&]() {
    ffi::Any rv;
    main_fn.CallPacked(packed.data(), static_cast<int32_t>(packed.size()), &rv);
    std::vector<Tensor> outs;
    if (auto t = rv.try_cast<Tensor>()) {
      outs.push_back(*t);
    } else {
      for (const auto& o : rv.cast<ffi::Array<ffi::Any>>()) outs.push_back(o.cast<Tensor>());
    }
    return outs;
  };
  std::vector<Tensor> first = call();
  double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();
  for (int i = 0; i < warmup; ++i) call();
  std::vector<double> ms;
  for (int i = 0; i < repeats; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    call();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());

  // -- compare with the reference, bit for bit
  auto ref = ReadNpz(by_role["reference_output"]);
  bool match = ref.size() == first.size();
  double max_diff = 0;
  for (size_t i = 0; i < std::min(ref.size(), first.size()); ++i) {
    const Array& r = ref[i].second;
    const Tensor& t = first[i];
    std::vector<int64_t> shape(t.shape().begin(), t.shape().end());
    bool same = shape == r.shape && t.dtype().code == r.dl.code && t.dtype().bits == r.dl.bits;
    if (!same) {
      match = false;
      continue;
    }
    std::string got(r.bytes.size(), '\0');
    if (t.device().device_type != kDLCPU) throw BadInput("output is not on the CPU");
    std::memcpy(got.data(), static_cast<const char*>(t.data_ptr()) + t.GetDLTensorPtr()->byte_offset, got.size());
    match = match && got == r.bytes;
    if (r.dtype == "float32") {
      const float* a = reinterpret_cast<const float*>(got.data());
      const float* b = reinterpret_cast<const float*>(r.bytes.data());
      for (int64_t k = 0; k < r.numel(); ++k) max_diff = std::max(max_diff, std::fabs(double(a[k]) - double(b[k])));
    } else if (got != r.bytes) {
      max_diff = std::max(max_diff, 1.0);  // integer outputs: report "differs"; exact value not needed here
    }
  }

  std::string why;
  bool emulated = Emulated(&why);
  std::ostringstream js;
  std::string lib_name = by_role["tvm_library"].substr(real_dir.size() + 1);
  js << "{\"tool\": \"qgnn_run\", \"artifact\": " << JsonStr(dir) << ", \"library\": "
     << JsonStr(lib_name) << ", \"emulated\": " << (emulated ? "true" : "false")
     << ", \"timing_label\": "
     << JsonStr(emulated ? "EMULATED (qemu-user) \u2014 not device timings" : "device timings")
     << ", \"emulation_evidence\": " << JsonStr(why) << ", \"threads\": "
     << (threads ? std::to_string(threads) : std::string("null")) << ", \"warmup\": " << warmup
     << ", \"repeats\": " << repeats << ", \"num_nodes\": " << num_nodes << ", \"num_edges\": " << num_edges
     << ", \"max_in_degree\": " << max_deg << ", \"load_and_first_run_s\": " << load_s
     << ", \"latency_ms\": {\"median\": " << Pct(ms, 50) << ", \"p90\": " << Pct(ms, 90) << ", \"p99\": "
     << Pct(ms, 99) << ", \"min\": " << ms.front() << ", \"max\": " << ms.back() << "}"
     << ", \"peak_rss_bytes\": " << StatusKb("VmHWM") * 1024 << ", \"reference_match\": " << (match ? "true" : "false")
     << ", \"max_abs_diff\": " << max_diff << "}";
  std::printf("%s\n", js.str().c_str());
  if (emulated) std::fprintf(stderr, "EMULATED (qemu-user) \u2014 not device timings\n");
  return match ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const BadInput& e) {
    std::fprintf(stderr, "qgnn_run: error: %s\n", e.what());
  } catch (const std::exception& e) {
    std::string msg = e.what();
    std::fprintf(stderr, "qgnn_run: error: %s\n", msg.substr(0, msg.find('\n')).c_str());
  }
  return 2;
}
