// oneDNN through its C API, loaded with dlopen: packed weight panels and per-shape primitives.
#include "model/onednn.h"

#include <dlfcn.h>
#include <oneapi/dnnl/dnnl.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <shared_mutex>

#include "common.h"

namespace unmask {
namespace {

// The entry points used, resolved from the loaded library.
struct Api {
  decltype(&dnnl_engine_create) engine_create;
  decltype(&dnnl_stream_create) stream_create;
  decltype(&dnnl_memory_desc_init_by_tag) md_by_tag;
  decltype(&dnnl_memory_desc_init_by_strides) md_by_strides;
  decltype(&dnnl_memory_desc_equal) md_equal;
  decltype(&dnnl_memory_desc_get_size) md_size;
  decltype(&dnnl_matmul_desc_init) matmul_desc;
  decltype(&dnnl_primitive_desc_create) pd_create;
  decltype(&dnnl_primitive_desc_query_md) pd_query_md;
  decltype(&dnnl_primitive_desc_query) pd_query;
  decltype(&dnnl_primitive_desc_destroy) pd_destroy;
  decltype(&dnnl_reorder_primitive_desc_create) reorder_pd;
  decltype(&dnnl_primitive_create) primitive_create;
  decltype(&dnnl_primitive_execute) execute;
  decltype(&dnnl_primitive_destroy) primitive_destroy;
  decltype(&dnnl_memory_create) memory_create;
  decltype(&dnnl_memory_destroy) memory_destroy;
  decltype(&dnnl_version) version;
  decltype(&dnnl_sgemm) sgemm;
  void (*omp_set_num_threads)(int) = nullptr;
  dnnl_engine_t engine = nullptr;
  std::string description;
  bool ok = false;
};

void check(dnnl_status_t status, const char* what) {
  if (status != dnnl_success)
    fail_runtime(std::string("oneDNN failed in ") + what + " (status " + std::to_string(status) + ")");
}

// The calling thread's stream, and one oneDNN thread for it: the CPU backend's threads share out
// the panels, so oneDNN's OpenMP must not start a team of its own inside each of them.
dnnl_stream_t thread_stream(const Api& api) {
  thread_local dnnl_stream_t stream = nullptr;
  if (!stream) {
    if (api.omp_set_num_threads) api.omp_set_num_threads(1);
    check(api.stream_create(&stream, api.engine, dnnl_stream_default_flags), "dnnl_stream_create");
  }
  return stream;
}

// A matmul primitive for x[n, k] times a panel of `width` output columns written with row
// stride ldo; `packed` receives the weight layout it wants (format "any": oneDNN's choice).
dnnl_primitive_t make_matmul(const Api& api, int64_t n, int64_t k, int64_t width, int64_t ldo,
                             dnnl_memory_desc_t* packed) {
  dnnl_memory_desc_t src, weights, dst;
  const dnnl_dims_t src_dims = {n, k}, w_dims = {k, width}, dst_dims = {n, width};
  const dnnl_dims_t dst_strides = {ldo, 1};
  check(api.md_by_tag(&src, 2, src_dims, dnnl_f32, dnnl_ab), "memory_desc_init");
  check(api.md_by_tag(&weights, 2, w_dims, dnnl_f32, dnnl_format_tag_any), "memory_desc_init");
  check(api.md_by_strides(&dst, 2, dst_dims, dnnl_f32, dst_strides), "memory_desc_init");
  dnnl_matmul_desc_t desc;
  check(api.matmul_desc(&desc, &src, &weights, nullptr, &dst), "dnnl_matmul_desc_init");
  dnnl_primitive_desc_t pd = nullptr;
  check(api.pd_create(&pd, &desc, nullptr, api.engine, nullptr), "dnnl_primitive_desc_create");
  *packed = *api.pd_query_md(pd, dnnl_query_weights_md, 0);
  dnnl_primitive_t p = nullptr;
  const dnnl_status_t status = api.primitive_create(&p, pd);
  api.pd_destroy(pd);
  check(status, "dnnl_primitive_create");
  return p;
}

Api load() {
  Api api;
  if (const char* env = std::getenv("UNMASK_ONEDNN"); env && std::strcmp(env, "0") == 0) {
    api.description = "off (UNMASK_ONEDNN=0)";
    return api;
  }
  void* lib = dlopen("libdnnl.so.2", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    api.description = "not found (libdnnl.so.2); OpenBLAS runs every matmul";
    return api;
  }
  bool all = true;
  auto sym = [&](auto& fn, const char* name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
    all = all && fn != nullptr;
  };
  sym(api.engine_create, "dnnl_engine_create");
  sym(api.stream_create, "dnnl_stream_create");
  sym(api.md_by_tag, "dnnl_memory_desc_init_by_tag");
  sym(api.md_by_strides, "dnnl_memory_desc_init_by_strides");
  sym(api.md_equal, "dnnl_memory_desc_equal");
  sym(api.md_size, "dnnl_memory_desc_get_size");
  sym(api.matmul_desc, "dnnl_matmul_desc_init");
  sym(api.pd_create, "dnnl_primitive_desc_create");
  sym(api.pd_query_md, "dnnl_primitive_desc_query_md");
  sym(api.pd_query, "dnnl_primitive_desc_query");
  sym(api.pd_destroy, "dnnl_primitive_desc_destroy");
  sym(api.reorder_pd, "dnnl_reorder_primitive_desc_create");
  sym(api.primitive_create, "dnnl_primitive_create");
  sym(api.execute, "dnnl_primitive_execute");
  sym(api.primitive_destroy, "dnnl_primitive_destroy");
  sym(api.memory_create, "dnnl_memory_create");
  sym(api.memory_destroy, "dnnl_memory_destroy");
  sym(api.version, "dnnl_version");
  sym(api.sgemm, "dnnl_sgemm");
  // note: libgomp comes with libdnnl (Debian builds it on OpenMP); found through the handle.
  api.omp_set_num_threads = reinterpret_cast<void (*)(int)>(dlsym(lib, "omp_set_num_threads"));
  if (!all || api.engine_create(&api.engine, dnnl_cpu, 0) != dnnl_success) {
    api.description = "unusable (libdnnl.so.2 lacks an entry point or a CPU engine); OpenBLAS runs every matmul";
    return api;
  }
  const dnnl_version_t* v = api.version();
  api.description = "oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
                    std::to_string(v->patch);
  // The kernels it picks on this CPU, from a probe of the common shape.
  dnnl_memory_desc_t src, weights, dst;
  const dnnl_dims_t src_dims = {64, 512}, w_dims = {512, PackedWeight::kPanelRows}, dst_dims = {64, PackedWeight::kPanelRows};
  api.md_by_tag(&src, 2, src_dims, dnnl_f32, dnnl_ab);
  api.md_by_tag(&weights, 2, w_dims, dnnl_f32, dnnl_format_tag_any);
  api.md_by_tag(&dst, 2, dst_dims, dnnl_f32, dnnl_ab);
  dnnl_matmul_desc_t desc;
  dnnl_primitive_desc_t pd = nullptr;
  if (api.matmul_desc(&desc, &src, &weights, nullptr, &dst) == dnnl_success &&
      api.pd_create(&pd, &desc, nullptr, api.engine, nullptr) == dnnl_success) {
    const char* impl = nullptr;
    if (api.pd_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl)
      api.description += std::string(", ") + impl + " kernels";
    api.pd_destroy(pd);
    api.ok = true;
  } else {
    api.description += ": no f32 matmul on this CPU; OpenBLAS runs every matmul";
  }
  return api;
}

const Api& api() {
  static std::once_flag once;
  static Api loaded;
  std::call_once(once, [] { loaded = load(); });
  return loaded;
}

}  // namespace

// One panel: its packed weights and the primitives made for it, one per number of rows of x.
struct PackedWeight::Panel {
  int64_t first = 0, width = 0;
  dnnl_memory_desc_t packed_md;
  // 64-byte aligned, as oneDNN's kernels load whole cache lines.
  std::unique_ptr<char, decltype(&std::free)> packed{nullptr, &std::free};
  size_t packed_bytes = 0;
  mutable std::shared_mutex mutex;
  mutable std::map<int64_t, dnnl_primitive_t> primitives;  // rows of x -> matmul
  ~Panel() {
    for (auto& [key, p] : primitives) api().primitive_destroy(p);
  }
};

PackedWeight::~PackedWeight() = default;

bool onednn_available() { return api().ok; }

namespace {
void sgemm_row_major(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
                     const float* b, int ldb, float beta, float* c, int ldc) {
  const Api& x = api();
  thread_stream(x);  // one OpenMP thread for this thread
  check(x.sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc),
        "dnnl_sgemm");
}
}  // namespace

OneDnnSgemm onednn_sgemm() { return api().ok ? &sgemm_row_major : nullptr; }
std::string onednn_description() { return api().description; }

std::unique_ptr<PackedWeight> pack_weight(const float* w, int64_t rows, int64_t k) {
  const Api& a = api();
  if (!a.ok || rows <= 0 || k <= 0) return nullptr;
  auto out = std::unique_ptr<PackedWeight>(new PackedWeight());
  out->rows_ = rows;
  out->k_ = k;
  dnnl_stream_t stream = thread_stream(a);
  for (int64_t first = 0; first < rows; first += PackedWeight::kPanelRows) {
    auto panel = std::make_unique<PackedWeight::Panel>();
    panel->first = first;
    panel->width = std::min(PackedWeight::kPanelRows, rows - first);
    // The layout the matmul wants, from a primitive for a typical canvas (it does not depend on
    // the rows of x; multiply() checks that it matches).
    dnnl_primitive_t probe = make_matmul(a, 64, k, panel->width, panel->width, &panel->packed_md);
    a.primitive_destroy(probe);
    panel->packed_bytes = a.md_size(&panel->packed_md);
    panel->packed.reset(static_cast<char*>(std::aligned_alloc(64, (panel->packed_bytes + 63) / 64 * 64)));
    if (!panel->packed) fail_runtime("out of host memory packing a weight for oneDNN");
    // W's rows [first, first + width) are the panel's k x width matrix in column-major ("ba").
    dnnl_memory_desc_t user_md;
    const dnnl_dims_t dims = {k, panel->width};
    check(a.md_by_tag(&user_md, 2, dims, dnnl_f32, dnnl_ba), "memory_desc_init");
    dnnl_memory_t user = nullptr, packed = nullptr;
    check(a.memory_create(&user, &user_md, a.engine, const_cast<float*>(w + first * k)), "dnnl_memory_create");
    check(a.memory_create(&packed, &panel->packed_md, a.engine, panel->packed.get()), "dnnl_memory_create");
    dnnl_primitive_desc_t pd = nullptr;
    check(a.reorder_pd(&pd, &user_md, a.engine, &panel->packed_md, a.engine, nullptr), "reorder");
    dnnl_primitive_t reorder = nullptr;
    check(a.primitive_create(&reorder, pd), "reorder");
    a.pd_destroy(pd);
    const dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, user}, {DNNL_ARG_TO, packed}};
    check(a.execute(reorder, stream, 2, args), "reorder");
    a.primitive_destroy(reorder);
    a.memory_destroy(user);
    a.memory_destroy(packed);
    out->bytes_ += panel->packed_bytes;
    out->panels_.push_back(std::move(panel));
  }
  return out;
}

void PackedWeight::multiply(int index, const float* x, int64_t n, float* out, int64_t ldo) const {
  const Api& a = api();
  const Panel& panel = *panels_[static_cast<size_t>(index)];
  dnnl_primitive_t p = nullptr;
  {
    std::shared_lock lock(panel.mutex);
    if (auto it = panel.primitives.find(n); it != panel.primitives.end()) p = it->second;
  }
  if (!p) {
    dnnl_memory_desc_t wanted;
    p = make_matmul(a, n, k_, panel.width, panel.width, &wanted);
    UNMASK_CHECK(a.md_equal(&wanted, &panel.packed_md),
                 "oneDNN wants another weight layout for " << n << " rows than the one packed");
    std::unique_lock lock(panel.mutex);
    auto [it, fresh] = panel.primitives.emplace(n, p);
    if (!fresh) {
      a.primitive_destroy(p);
      p = it->second;
    }
  }
  // note: the packed kernels write a dense [n, width] block only (a strided destination makes
  // oneDNN fall back to plain layouts), so a panel narrower than the output goes through a
  // per-thread block that is then copied into its columns: n * width copies against
  // n * width * k multiply-adds.
  thread_local std::vector<float> block;
  float* dst_ptr = out;
  if (ldo != panel.width) {
    block.resize(static_cast<size_t>(n * panel.width));
    dst_ptr = block.data();
  }
  dnnl_memory_desc_t src_md, dst_md;
  const dnnl_dims_t src_dims = {n, k_}, dst_dims = {n, panel.width};
  check(a.md_by_tag(&src_md, 2, src_dims, dnnl_f32, dnnl_ab), "memory_desc_init");
  check(a.md_by_tag(&dst_md, 2, dst_dims, dnnl_f32, dnnl_ab), "memory_desc_init");
  dnnl_memory_t src = nullptr, weights = nullptr, dst = nullptr;
  check(a.memory_create(&src, &src_md, a.engine, const_cast<float*>(x)), "dnnl_memory_create");
  check(a.memory_create(&weights, &panel.packed_md, a.engine, panel.packed.get()), "dnnl_memory_create");
  check(a.memory_create(&dst, &dst_md, a.engine, dst_ptr), "dnnl_memory_create");
  const dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}};
  const dnnl_status_t status = a.execute(p, thread_stream(a), 3, args);
  a.memory_destroy(src);
  a.memory_destroy(weights);
  a.memory_destroy(dst);
  check(status, "dnnl_primitive_execute");
  if (dst_ptr != out)
    for (int64_t r = 0; r < n; r++)
      std::memcpy(out + r * ldo, dst_ptr + r * panel.width, static_cast<size_t>(panel.width) * sizeof(float));
}

}  // namespace unmask
