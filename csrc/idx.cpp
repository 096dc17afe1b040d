// The IDX reader (the MNIST format), gzip-compressed or not.
#include "idx.h"

#include <algorithm>

#include <ATen/ATen.h>
#include <zlib.h>

namespace finetune {

namespace {

struct GzFile {
  gzFile handle;
  explicit GzFile(const std::string& path) : handle(gzopen(path.c_str(), "rb")) {}
  ~GzFile() {
    if (handle) gzclose(handle);
  }
  // Reads exactly `size` bytes or throws, naming the file.
  void read(void* out, size_t size, const std::string& path) {
    auto* bytes = static_cast<char*>(out);
    while (size > 0) {
      const unsigned chunk = static_cast<unsigned>(std::min<size_t>(size, 1u << 30));
      const int got = gzread(handle, bytes, chunk);
      TORCH_CHECK_VALUE(got > 0, "IDX file '", path, "' is truncated or corrupt");
      bytes += got;
      size -= static_cast<size_t>(got);
    }
  }
};

}  // namespace

at::Tensor read_idx(const std::string& path) {
  GzFile file(path);  // gzread reads uncompressed files transparently too
  TORCH_CHECK(file.handle != nullptr, "cannot open IDX file '", path, "'");
  unsigned char magic[4];
  file.read(magic, 4, path);
  TORCH_CHECK_VALUE(magic[0] == 0 && magic[1] == 0, "'", path, "' is not an IDX file (bad magic number)");
  at::ScalarType type;
  switch (magic[2]) {
    case 0x08: type = at::kByte; break;
    case 0x09: type = at::kChar; break;
    case 0x0B: type = at::kShort; break;
    case 0x0C: type = at::kInt; break;
    case 0x0D: type = at::kFloat; break;
    case 0x0E: type = at::kDouble; break;
    default: TORCH_CHECK_VALUE(false, "IDX file '", path, "' has unknown element type 0x", std::hex, int(magic[2]));
  }
  const int ndim = magic[3];
  TORCH_CHECK_VALUE(ndim >= 1 && ndim <= 8, "IDX file '", path, "' has ", ndim, " dimensions");
  std::vector<int64_t> shape(ndim);
  for (int d = 0; d < ndim; ++d) {
    unsigned char b[4];
    file.read(b, 4, path);
    shape[d] = (int64_t(b[0]) << 24) | (int64_t(b[1]) << 16) | (int64_t(b[2]) << 8) | int64_t(b[3]);
  }
  auto tensor = at::empty(shape, at::TensorOptions().dtype(type));
  file.read(tensor.data_ptr(), tensor.nbytes(), path);
  if (tensor.element_size() > 1) {
    // IDX stores big-endian values; this machine (x86, ARM) is little-endian.
    auto bytes = tensor.view(at::kByte).view({-1, static_cast<int64_t>(tensor.element_size())});
    tensor = bytes.flip(1).contiguous().view(type).view(shape);
  }
  return tensor;
}

}  // namespace finetune
