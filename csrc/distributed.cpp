// Bucketed collectives for the data-parallel loop.
#include "distributed.h"

#include <chrono>

#include <ATen/ATen.h>

namespace finetune {

ProcessGroupParallel::ProcessGroupParallel(c10::intrusive_ptr<c10d::ProcessGroup> group, double bucket_mb,
                                           const at::Device& device)
    : group_(std::move(group)), bucket_bytes_(static_cast<int64_t>(bucket_mb * 1024 * 1024)), device_(device) {
  TORCH_CHECK_VALUE(group_, "distributed training needs a process group");
  TORCH_CHECK_VALUE(bucket_mb > 0, "bucket_mb must be > 0, got ", bucket_mb);
}

int64_t ProcessGroupParallel::rank() const { return group_->getRank(); }
int64_t ProcessGroupParallel::world_size() const { return group_->getSize(); }

template <typename Collective>
void ProcessGroupParallel::bucketed(const std::vector<at::Tensor>& tensors, Collective collective) {
  std::vector<std::vector<at::Tensor>> buckets;
  int64_t bytes = bucket_bytes_;
  for (const auto& t : tensors) {
    const bool fits = !buckets.empty() && bytes + static_cast<int64_t>(t.nbytes()) <= bucket_bytes_ &&
                      buckets.back().front().scalar_type() == t.scalar_type() &&
                      buckets.back().front().device() == t.device();
    if (!fits) {
      buckets.emplace_back();
      bytes = 0;
    }
    buckets.back().push_back(t);
    bytes += static_cast<int64_t>(t.nbytes());
  }
  std::vector<at::Tensor> flats;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (const auto& bucket : buckets) {
    std::vector<at::Tensor> views;
    for (const auto& t : bucket) views.push_back(t.reshape(-1));
    std::vector<at::Tensor> flat = {at::cat(views)};
    works.push_back(collective(flat));
    flats.push_back(flat[0]);
  }
  for (size_t b = 0; b < buckets.size(); ++b) {
    works[b]->wait();
    int64_t offset = 0;
    for (const auto& t : buckets[b]) {
      const int64_t n = t.numel();
      t.copy_(flats[b].slice(0, offset, offset + n).view(t.sizes()));
      offset += n;
    }
  }
}

void ProcessGroupParallel::broadcast(const std::vector<at::Tensor>& tensors) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> detached;
  for (const auto& t : tensors) detached.push_back(t.detach());
  bucketed(detached, [this](std::vector<at::Tensor>& flat) {
    c10d::BroadcastOptions options;
    options.rootRank = 0;
    return group_->broadcast(flat, options);
  });
}

void ProcessGroupParallel::sum_gradients(const std::vector<at::Tensor>& params) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<at::Tensor> grads;
  for (const auto& p : params) {
    // A rank whose share of the step was empty has no gradient: it contributes zeros.
    if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
    grads.push_back(p.grad());
  }
  bucketed(grads, [this](std::vector<at::Tensor>& flat) { return group_->allreduce(flat); });
  communication_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double ProcessGroupParallel::sum(double value) {
  std::vector<at::Tensor> t = {at::full({1}, value, at::TensorOptions().dtype(at::kDouble).device(device_))};
  group_->allreduce(t)->wait();
  return t[0].item<double>();
}

}  // namespace finetune
