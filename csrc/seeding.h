// Seeded generators of their own (never the global one), so that samples, orders and augmentations can be
// recomputed from (seed, epoch, step) alone: on resume, and on every rank.
#pragma once

#include <cstdint>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>

namespace finetune {

inline at::Generator seeded_generator(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

// splitmix64: decorrelates the streams of neighbouring (seed, epoch) pairs.
inline uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

}  // namespace finetune
