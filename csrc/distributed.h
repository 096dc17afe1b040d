// Data parallelism on torch.distributed's c10d: parameters broadcast from rank 0, gradients summed in
// flattened buckets whose all-reduces start from autograd hooks while backward is still running, over a
// process group created in Python (Gloo on CPU, NCCL on GPU).
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include "train.h"

namespace finetune {

class ProcessGroupParallel : public Parallel {
 public:
  // `device`: where the group's collectives run (CPU for Gloo, the rank's GPU for NCCL).
  ProcessGroupParallel(c10::intrusive_ptr<c10d::ProcessGroup> group, double bucket_mb, const at::Device& device);
  ~ProcessGroupParallel() override;  // removes the autograd hooks from the model's parameters
  ProcessGroupParallel(const ProcessGroupParallel&) = delete;
  ProcessGroupParallel& operator=(const ProcessGroupParallel&) = delete;

  int64_t rank() const override;
  int64_t world_size() const override;
  void broadcast(const std::vector<at::Tensor>& tensors) override;
  void expect_gradients(const std::vector<at::Tensor>& params) override;
  at::Tensor sum_gradients(const std::vector<at::Tensor>& params, const at::Tensor& step_values) override;
  using Parallel::sum;
  at::Tensor sum(const at::Tensor& value) override;
  double communication_seconds() const override { return communication_seconds_; }
  int64_t buckets_reduced() const override { return buckets_reduced_; }
  int64_t buckets_overlapped() const override { return buckets_overlapped_; }

 private:
  // A run of parameters whose gradients are flattened into one tensor and all-reduced together.
  struct Bucket {
    std::vector<at::Tensor> params;
    size_t pending = 0;                       // gradients the current backward has yet to produce
    // The gradients, then one count per parameter: 1 where this rank has a gradient for it, 0 where it sends
    // zeros instead. Summed, a count of 0 means no rank used the parameter: its gradient stays undefined, so
    // the optimizer skips it (no weight decay, no momentum) exactly as in a single-process run. The last
    // bucket ends with the step's values.
    at::Tensor flat;
    int64_t extra = 0;                        // how many step values end `flat`
    std::vector<size_t> unused_here;          // indices into params
    c10::intrusive_ptr<c10d::Work> work;
  };

  // Hooks every parameter's gradient accumulator (replacing the previous hooks) and assigns the parameters
  // to buckets in reverse order, a first guess at the order backward produces their gradients in.
  void watch(const std::vector<at::Tensor>& params);
  // Fills buckets_ with watched_[order[0]], watched_[order[1]], ... (a small first bucket, then bucket_bytes_).
  void assign_buckets(const std::vector<int64_t>& order);
  // After the first step with new hooks: buckets again, in the order that step's backward produced the
  // gradients on rank 0 (broadcast, so that every rank agrees), parameters it never reached last. A
  // parameter backward does not reach would otherwise hold back every bucket after its own.
  void reassign_buckets_by_observed_order();
  void remove_hooks();
  // Autograd hook: parameter `index`'s gradient is complete for this backward.
  void gradient_ready(size_t index);
  // During backward: starts bucket next_bucket_ and those after it while they are ready. Buckets start in
  // the same order on every rank whatever order backward reaches them in, as collectives must. The last
  // bucket waits for sum_gradients, which adds the step's values to it (once it is ready, backward has
  // nothing left to overlap anyway).
  void start_ready_buckets();
  // `extra` (may be undefined) is flattened after the gradients and the counts.
  void start(Bucket& bucket, const at::Tensor& extra = {});

  c10::intrusive_ptr<c10d::ProcessGroup> group_;
  int64_t bucket_bytes_;
  at::Device device_;

  std::mutex mutex_;  // the hooks run on autograd's thread (a device thread on CUDA)
  std::vector<at::Tensor> watched_;
  std::vector<size_t> bucket_of_;            // by index into watched_
  std::vector<Bucket> buckets_;
  std::vector<std::pair<c10::intrusive_ptr<torch::autograd::Node>, uintptr_t>> hooks_;
  bool armed_ = false;                       // between expect_gradients and sum_gradients
  bool observing_ = false;                   // recording ready_order_ (the first step after watch)
  std::vector<int64_t> ready_order_;
  size_t next_bucket_ = 0;

  double communication_seconds_ = 0.0;
  int64_t buckets_reduced_ = 0;
  int64_t buckets_overlapped_ = 0;
};

}  // namespace finetune
