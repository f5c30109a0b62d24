// AllocatorStats: [bytes in use, peak bytes in use, limit or -1] of the allocator of the device
// the op runs on; with reset=true the peak then restarts from the bytes in use.
//
// TF 1.15 keeps these statistics in its BFC allocator (the CPU's when TF_CPU_ALLOCATOR_USE_BFC
// is true) but has no Python call for them; benchmarks/peak.py builds this file against the
// installed TensorFlow's headers (tf.sysconfig) on first use. TF 2 has
// tf.config.experimental.get_memory_info and reset_memory_stats instead.
#include "tensorflow/core/framework/allocator.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {

REGISTER_OP("AllocatorStats")
    .Attr("reset: bool = false")
    .Output("stats: int64")
    .SetIsStateful()
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      c->set_output(0, c->Vector(3));
      return Status::OK();
    });

class AllocatorStatsOp : public OpKernel {
 public:
  explicit AllocatorStatsOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("reset", &reset_));
  }

  void Compute(OpKernelContext* ctx) override {
    Allocator* allocator = ctx->device()->GetAllocator(AllocatorAttributes());
    auto stats = allocator->GetStats();
    OP_REQUIRES(ctx, stats.has_value(),
                errors::FailedPrecondition(allocator->Name(), " keeps no statistics (set "
                                           "TF_CPU_ALLOCATOR_USE_BFC=true)"));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({3}), &out));
    auto values = out->vec<int64>();
    values(0) = stats->bytes_in_use;
    values(1) = stats->peak_bytes_in_use;
    values(2) = stats->bytes_limit ? *stats->bytes_limit : -1;
    if (reset_) allocator->ClearStats();
  }

 private:
  bool reset_;
};

REGISTER_KERNEL_BUILDER(Name("AllocatorStats").Device(DEVICE_CPU), AllocatorStatsOp);

}  // namespace tensorflow
