// Bucketed collectives for the data-parallel loop, the gradient all-reduce overlapped with backward.
#include "distributed.h"

#include <algorithm>
#include <chrono>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

namespace finetune {

namespace {

using Clock = std::chrono::steady_clock;

// The first bucket is kept small (1 MiB, as DDP does) so that the last layers' gradients, which backward
// produces first, go on the wire while the rest of backward runs.
constexpr int64_t kFirstBucketBytes = 1024 * 1024;

// Groups tensors[order[0]], tensors[order[1]], ... into runs of one dtype and device, each of at most
// `first_bytes` (the first run) or `bytes` (the others), or of one larger tensor. Returns indices.
std::vector<std::vector<int64_t>> into_buckets(const std::vector<at::Tensor>& tensors, const std::vector<int64_t>& order,
                                               int64_t first_bytes, int64_t bytes) {
  std::vector<std::vector<int64_t>> buckets;
  int64_t filled = 0;
  for (const int64_t i : order) {
    const auto& t = tensors[i];
    const int64_t cap = buckets.size() <= 1 ? first_bytes : bytes;  // size 1: deciding whether the first grows
    const bool fits = !buckets.empty() && filled + static_cast<int64_t>(t.nbytes()) <= cap &&
                      tensors[buckets.back().front()].scalar_type() == t.scalar_type() &&
                      tensors[buckets.back().front()].device() == t.device();
    if (!fits) {
      buckets.emplace_back();
      filled = 0;
    }
    buckets.back().push_back(i);
    filled += static_cast<int64_t>(t.nbytes());
  }
  return buckets;
}

std::vector<int64_t> in_order(size_t n) {
  std::vector<int64_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = static_cast<int64_t>(i);
  return order;
}

at::Tensor flatten(const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> views;
  views.reserve(tensors.size());
  for (const auto& t : tensors) views.push_back(t.reshape(-1));
  return at::cat(views);
}

void unflatten(const at::Tensor& flat, const std::vector<at::Tensor>& into) {
  int64_t offset = 0;
  for (const auto& t : into) {
    const int64_t n = t.numel();
    t.copy_(flat.slice(0, offset, offset + n).view(t.sizes()));
    offset += n;
  }
}

bool same_tensors(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](const at::Tensor& x, const at::Tensor& y) {
           return x.is_same(y);
         });
}

// Runs `ready` after a parameter's gradient accumulator has run, i.e. once its gradient for the current
// backward is complete.
class GradientReadyHook : public torch::autograd::FunctionPostHook {
 public:
  explicit GradientReadyHook(std::function<void()> ready) : ready_(std::move(ready)) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    ready_();
    return outputs;
  }

 private:
  std::function<void()> ready_;
};

}  // namespace

double Parallel::sum(double value) {
  return sum(at::full({1}, value, at::TensorOptions().dtype(at::kDouble)))[0].item<double>();
}

ProcessGroupParallel::ProcessGroupParallel(c10::intrusive_ptr<c10d::ProcessGroup> group, double bucket_mb,
                                           const at::Device& device)
    : group_(std::move(group)), bucket_bytes_(static_cast<int64_t>(bucket_mb * 1024 * 1024)), device_(device) {
  TORCH_CHECK_VALUE(group_, "distributed training needs a process group");
  TORCH_CHECK_VALUE(bucket_mb > 0, "bucket_mb must be > 0, got ", bucket_mb);
}

ProcessGroupParallel::~ProcessGroupParallel() { remove_hooks(); }

int64_t ProcessGroupParallel::rank() const { return group_->getRank(); }
int64_t ProcessGroupParallel::world_size() const { return group_->getSize(); }

void ProcessGroupParallel::broadcast(const std::vector<at::Tensor>& tensors) {
  at::NoGradGuard no_grad;
  std::vector<std::vector<at::Tensor>> buckets;
  for (const auto& indices : into_buckets(tensors, in_order(tensors.size()), bucket_bytes_, bucket_bytes_)) {
    buckets.emplace_back();
    for (const int64_t i : indices) buckets.back().push_back(tensors[i].detach());
  }
  std::vector<at::Tensor> flats;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  c10d::BroadcastOptions options;
  options.rootRank = 0;
  for (const auto& bucket : buckets) {  // all started before any is waited for
    std::vector<at::Tensor> flat = {flatten(bucket)};
    works.push_back(group_->broadcast(flat, options));
    flats.push_back(flat[0]);
  }
  for (size_t b = 0; b < buckets.size(); ++b) {
    works[b]->wait();
    unflatten(flats[b], buckets[b]);
  }
}

void ProcessGroupParallel::watch(const std::vector<at::Tensor>& params) {
  remove_hooks();
  watched_ = params;
  auto reverse = in_order(params.size());
  std::reverse(reverse.begin(), reverse.end());
  assign_buckets(reverse);
  for (size_t i = 0; i < params.size(); ++i) {
    auto accumulator = torch::autograd::impl::grad_accumulator(params[i]);
    TORCH_CHECK(accumulator, "a trainable parameter of shape ", params[i].sizes(), " has no gradient accumulator");
    const auto key = accumulator->add_post_hook(std::make_unique<GradientReadyHook>([this, i] { gradient_ready(i); }));
    hooks_.emplace_back(std::move(accumulator), key);  // holding the accumulator keeps the hook on it
  }
  observing_ = true;
  ready_order_.clear();
}

void ProcessGroupParallel::assign_buckets(const std::vector<int64_t>& order) {
  buckets_.clear();
  bucket_of_.assign(watched_.size(), 0);
  for (const auto& indices : into_buckets(watched_, order, std::min(bucket_bytes_, kFirstBucketBytes), bucket_bytes_)) {
    buckets_.emplace_back();
    for (const int64_t i : indices) {
      buckets_.back().params.push_back(watched_[i]);
      bucket_of_[i] = buckets_.size() - 1;
    }
  }
}

void ProcessGroupParallel::reassign_buckets_by_observed_order() {
  const auto n = static_cast<int64_t>(watched_.size());
  std::vector<int64_t> order;
  std::vector<bool> seen(watched_.size(), false);
  for (const int64_t i : ready_order_) {
    if (!seen[i]) order.push_back(i);
    seen[i] = true;
  }
  for (int64_t i = n - 1; i >= 0; --i) {
    if (!seen[i]) order.push_back(i);
  }
  std::vector<at::Tensor> shared = {at::tensor(order, at::kLong).to(device_)};
  c10d::BroadcastOptions options;
  options.rootRank = 0;
  group_->broadcast(shared, options)->wait();
  const auto from_rank0 = shared[0].cpu();
  assign_buckets(std::vector<int64_t>(from_rank0.data_ptr<int64_t>(), from_rank0.data_ptr<int64_t>() + n));
}

void ProcessGroupParallel::remove_hooks() {
  for (auto& [accumulator, key] : hooks_) accumulator->del_post_hook(key);
  hooks_.clear();
}

void ProcessGroupParallel::expect_gradients(const std::vector<at::Tensor>& params) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!same_tensors(params, watched_)) watch(params);  // the first step, or parameters were unfrozen
  for (auto& bucket : buckets_) {
    bucket.pending = bucket.params.size();
    bucket.flat = at::Tensor();
    bucket.work.reset();
  }
  next_bucket_ = 0;
  armed_ = true;
}

void ProcessGroupParallel::gradient_ready(size_t index) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!armed_) return;  // a micro-batch before the step's last one, or a backward outside the loop
  if (observing_) ready_order_.push_back(static_cast<int64_t>(index));
  auto& bucket = buckets_[bucket_of_[index]];
  if (bucket.pending > 0) --bucket.pending;
  const auto begin = Clock::now();
  start_ready_buckets();
  communication_seconds_ += std::chrono::duration<double>(Clock::now() - begin).count();
}

void ProcessGroupParallel::start_ready_buckets() {
  while (next_bucket_ + 1 < buckets_.size() && buckets_[next_bucket_].pending == 0) {
    start(buckets_[next_bucket_++]);
    const bool more_to_come = std::any_of(buckets_.begin() + static_cast<std::ptrdiff_t>(next_bucket_), buckets_.end(),
                                          [](const Bucket& b) { return b.pending > 0; });
    if (more_to_come) ++buckets_overlapped_;
  }
}

void ProcessGroupParallel::start(Bucket& bucket, const at::Tensor& extra) {
  std::vector<at::Tensor> grads;
  bucket.unused_here.clear();
  for (size_t i = 0; i < bucket.params.size(); ++i) {
    // A parameter this rank's backward did not reach (or a rank with nothing to do this step) adds zeros.
    const auto& p = bucket.params[i];
    if (!p.grad().defined()) {
      p.mutable_grad() = at::zeros_like(p);
      bucket.unused_here.push_back(i);
    }
    grads.push_back(p.grad());
  }
  const auto& first = bucket.params.front();
  auto used = at::ones({static_cast<int64_t>(bucket.params.size())}, first.options().requires_grad(false));
  for (const size_t i : bucket.unused_here) used[static_cast<int64_t>(i)] = 0;
  grads.push_back(used);
  bucket.extra = extra.defined() ? extra.numel() : 0;
  if (extra.defined()) grads.push_back(extra.detach().to(first.options()));
  std::vector<at::Tensor> flat = {flatten(grads)};
  bucket.work = group_->allreduce(flat);
  bucket.flat = flat[0];
  ++buckets_reduced_;
}

at::Tensor ProcessGroupParallel::sum_gradients(const std::vector<at::Tensor>& params, const at::Tensor& step_values) {
  if (!armed_) expect_gradients(params);  // no backward on this rank this step
  const auto begin = Clock::now();
  std::lock_guard<std::mutex> lock(mutex_);
  TORCH_CHECK(same_tensors(params, watched_), "sum_gradients: the parameters differ from expect_gradients'");
  TORCH_CHECK(!buckets_.empty(), "sum_gradients: no trainable parameters");
  // Backward is over: what it did not reach is due now, and the last bucket carries the step's values.
  for (; next_bucket_ < buckets_.size(); ++next_bucket_) {
    start(buckets_[next_bucket_], next_bucket_ + 1 == buckets_.size() ? step_values.reshape(-1) : at::Tensor());
  }
  at::NoGradGuard no_grad;
  at::Tensor summed_values;
  for (auto& bucket : buckets_) {
    bucket.work->wait();
    std::vector<at::Tensor> grads;
    for (const auto& p : bucket.params) grads.push_back(p.grad());
    unflatten(bucket.flat, grads);
    const int64_t counts_end = bucket.flat.size(0) - bucket.extra;
    if (bucket.extra > 0) {
      summed_values = bucket.flat.slice(0, counts_end).to(step_values.scalar_type()).view(step_values.sizes());
    }
    if (!bucket.unused_here.empty()) {  // only then is the count worth reading back (a sync on a GPU)
      const auto counts = bucket.flat.slice(0, counts_end - static_cast<int64_t>(bucket.params.size()), counts_end).cpu();
      for (const size_t i : bucket.unused_here) {
        if (counts[static_cast<int64_t>(i)].item<double>() == 0.0) bucket.params[i].mutable_grad() = at::Tensor();
      }
    }
    bucket.flat = at::Tensor();
    bucket.work.reset();
  }
  armed_ = false;
  if (observing_) {
    observing_ = false;
    reassign_buckets_by_observed_order();
  }
  communication_seconds_ += std::chrono::duration<double>(Clock::now() - begin).count();
  return summed_values;
}

at::Tensor ProcessGroupParallel::sum(const at::Tensor& value) {
  std::vector<at::Tensor> t = {value.to(device_, /*non_blocking=*/false, /*copy=*/true).contiguous()};
  group_->allreduce(t)->wait();
  return t[0].to(value.device());
}

}  // namespace finetune
