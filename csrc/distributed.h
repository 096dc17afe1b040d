// Data parallelism on torch.distributed's c10d: parameters broadcast from rank 0, gradients summed in
// flattened buckets, over a process group created in Python (Gloo on CPU, NCCL on GPU).
#pragma once

#include <memory>
#include <vector>

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include "train.h"

namespace finetune {

class ProcessGroupParallel : public Parallel {
 public:
  // `device`: where the group's collectives run (CPU for Gloo, the rank's GPU for NCCL).
  ProcessGroupParallel(c10::intrusive_ptr<c10d::ProcessGroup> group, double bucket_mb, const at::Device& device);

  int64_t rank() const override;
  int64_t world_size() const override;
  void broadcast(const std::vector<at::Tensor>& tensors) override;
  void sum_gradients(const std::vector<at::Tensor>& params) override;
  double sum(double value) override;
  double communication_seconds() const override { return communication_seconds_; }

 private:
  // Flattens `tensors` into buckets of about bucket_bytes_ (one dtype and device each), runs `collective`
  // on every bucket (all launched before any is waited for), and copies the results back.
  template <typename Collective>
  void bucketed(const std::vector<at::Tensor>& tensors, Collective collective);

  c10::intrusive_ptr<c10d::ProcessGroup> group_;
  int64_t bucket_bytes_;
  at::Device device_;
  double communication_seconds_ = 0.0;
};

}  // namespace finetune
