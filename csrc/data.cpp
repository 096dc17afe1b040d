// Datasets, sampling and the IDX reader.
#include "data.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <zlib.h>

namespace finetune {

Dataset::Dataset(std::vector<at::Tensor> inputs_, at::Tensor targets_)
    : inputs(std::move(inputs_)), targets(std::move(targets_)) {
  TORCH_CHECK_VALUE(!inputs.empty(), "a dataset needs at least one input tensor");
  TORCH_CHECK_VALUE(targets.defined() && targets.dim() >= 1, "targets must be a tensor with a first dimension");
  for (size_t i = 0; i < inputs.size(); ++i) {
    TORCH_CHECK_VALUE(inputs[i].dim() >= 1 && inputs[i].size(0) == targets.size(0), "input ", i,
                      " has ", (inputs[i].dim() ? inputs[i].size(0) : 0), " rows but targets have ",
                      targets.size(0));
  }
}

Batch Dataset::gather(const at::Tensor& indices) const {
  Batch batch;
  batch.inputs.reserve(inputs.size());
  for (const auto& input : inputs) batch.inputs.push_back(input.index_select(0, indices));
  batch.targets = targets.index_select(0, indices);
  return batch;
}

Batch Dataset::slice(int64_t start, int64_t end) const {
  Batch batch;
  for (const auto& input : inputs) batch.inputs.push_back(input.slice(0, start, end));
  batch.targets = targets.slice(0, start, end);
  return batch;
}

void check_dataset(const Dataset& data, const TrainConfig& config, const std::string& name) {
  TORCH_CHECK_VALUE(data.size() > 0, name, " is empty (0 examples)");
  if (config.is_classification()) {
    TORCH_CHECK_VALUE(data.targets.scalar_type() == at::kLong,
                      name, " labels must be int64 class ids for task='classification', got dtype ",
                      data.targets.scalar_type());
    TORCH_CHECK_VALUE(data.targets.dim() == 1, name, " labels must be one-dimensional, got shape ",
                      data.targets.sizes());
    const int64_t lowest = data.targets.min().item<int64_t>();
    TORCH_CHECK_VALUE(lowest >= 0, name, " labels must be class ids >= 0, got ", lowest);
  } else {
    TORCH_CHECK_VALUE(at::isFloatingType(data.targets.scalar_type()),
                      name, " targets must be floating point for task='regression', got dtype ",
                      data.targets.scalar_type());
  }
}

namespace {

at::Generator seeded_generator(uint64_t seed) {
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

// splitmix64: decorrelates the streams of neighbouring (seed, epoch) pairs.
uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// How many examples each class contributes to a sample of `k` out of `counts`: every class gets the floor
// or the ceiling of its exact share, and no class present in the data gets zero. The total is k, except
// when k is too small to give each present class one example: then it is the number of classes needed.
std::vector<int64_t> stratified_quota(const std::vector<int64_t>& counts, int64_t k) {
  const int64_t n = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  std::vector<int64_t> quota(counts.size());
  std::vector<std::pair<double, size_t>> remainders;  // (fractional part, class) of classes that may get +1
  int64_t assigned = 0;
  for (size_t c = 0; c < counts.size(); ++c) {
    const double exact = static_cast<double>(counts[c]) * static_cast<double>(k) / static_cast<double>(n);
    quota[c] = static_cast<int64_t>(std::floor(exact));
    if (counts[c] > 0 && quota[c] == 0) {
      quota[c] = 1;  // the ceiling of a share below one: the class is kept
    } else if (counts[c] > quota[c]) {
      remainders.emplace_back(exact - std::floor(exact), c);
    }
    assigned += quota[c];
  }
  // Largest remainder first; ties go to the lower class id so the result is deterministic.
  std::stable_sort(remainders.begin(), remainders.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = 0; assigned < k && i < remainders.size(); ++i, ++assigned) quota[remainders[i].second] += 1;
  return quota;
}

}  // namespace

at::Tensor sample_indices(const at::Tensor& targets, const TrainConfig& config) {
  const int64_t n = targets.size(0);
  TORCH_CHECK_VALUE(config.sample_size <= n, "sample_size must be <= the number of training examples (", n,
                    "), got ", config.sample_size);
  const int64_t k = config.sample_size > 0
                        ? config.sample_size
                        : std::max<int64_t>(1, std::llround(config.sample_fraction * static_cast<double>(n)));
  if (k == n) return at::arange(n, at::kLong);

  auto generator = seeded_generator(mix(static_cast<uint64_t>(config.seed)));
  if (!(config.stratify && config.is_classification())) {
    return std::get<0>(at::randperm(n, generator, at::kLong).slice(0, 0, k).sort());
  }
  const auto labels = targets.to(at::kLong).contiguous();
  const auto counts_tensor = at::bincount(labels);
  std::vector<int64_t> counts(counts_tensor.data_ptr<int64_t>(),
                              counts_tensor.data_ptr<int64_t>() + counts_tensor.numel());
  const auto quota = stratified_quota(counts, k);
  std::vector<at::Tensor> picked;
  for (size_t c = 0; c < counts.size(); ++c) {
    if (quota[c] == 0) continue;
    const auto members = (labels == static_cast<int64_t>(c)).nonzero().flatten();
    const auto shuffled = members.index_select(0, at::randperm(members.size(0), generator, at::kLong));
    picked.push_back(shuffled.slice(0, 0, quota[c]));
  }
  return std::get<0>(at::cat(picked).sort());
}

std::vector<int64_t> class_counts(const at::Tensor& targets, const at::Tensor& indices) {
  const auto counts = at::bincount(targets.index_select(0, indices).to(at::kLong)).contiguous();
  return std::vector<int64_t>(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + counts.numel());
}

namespace {

at::Generator epoch_generator(int64_t seed, int64_t epoch) {
  return seeded_generator(mix(mix(static_cast<uint64_t>(seed)) ^ static_cast<uint64_t>(epoch + 1)));
}

}  // namespace

at::Tensor epoch_order(const at::Tensor& subset, int64_t seed, int64_t epoch, bool shuffle) {
  if (!shuffle) return subset;
  auto generator = epoch_generator(seed, epoch);
  return subset.index_select(0, at::randperm(subset.size(0), generator, at::kLong));
}

at::Tensor balanced_epoch_order(const at::Tensor& targets, const at::Tensor& subset, int64_t seed, int64_t epoch) {
  const auto labels = targets.index_select(0, subset).to(at::kLong);
  const auto weights = at::bincount(labels).to(at::kDouble).reciprocal().index_select(0, labels);
  auto generator = epoch_generator(seed, epoch);
  return subset.index_select(0, at::multinomial(weights, subset.size(0), /*replacement=*/true, generator));
}

std::vector<at::Tensor> augment_images(const std::vector<at::Tensor>& inputs, int64_t pad, bool flip, int64_t seed,
                                       int64_t epoch, int64_t step) {
  if (pad == 0 && !flip) return inputs;
  auto generator = seeded_generator(mix(mix(mix(static_cast<uint64_t>(seed)) ^ static_cast<uint64_t>(epoch + 1)) ^
                                        static_cast<uint64_t>(step + 1)));
  std::vector<at::Tensor> out;
  for (const auto& x : inputs) {
    if (x.dim() != 4 || !at::isFloatingType(x.scalar_type())) {
      out.push_back(x);
      continue;
    }
    const int64_t n = x.size(0), h = x.size(2), w = x.size(3);
    auto images = x;
    if (pad > 0) {
      const auto padded = at::constant_pad_nd(x, {pad, pad, pad, pad}, 0.0);
      const auto offsets = at::randint(2 * pad + 1, {n, 2}, generator, at::TensorOptions().dtype(at::kLong)).to(at::kCPU);
      const auto* o = offsets.data_ptr<int64_t>();
      std::vector<at::Tensor> crops;
      crops.reserve(n);
      for (int64_t i = 0; i < n; ++i) {
        crops.push_back(padded[i].slice(1, o[2 * i], o[2 * i] + h).slice(2, o[2 * i + 1], o[2 * i + 1] + w));
      }
      images = at::stack(crops);
    }
    if (flip) {
      const auto flipped = at::rand({n}, generator, at::TensorOptions().dtype(at::kFloat)).lt(0.5).to(x.device());
      images = at::where(flipped.view({n, 1, 1, 1}), images.flip({3}), images);
    }
    out.push_back(images);
  }
  return out;
}

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
