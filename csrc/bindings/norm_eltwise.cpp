// BatchNorm, activations, softmax, cross-entropy, dropout and add bindings.
#include "bindings/common.h"

namespace fastconv {
namespace {

EltwiseKind to_kind(int k) {
  if (k < 0 || k > 6) throw py::value_error("unknown activation kind");
  return static_cast<EltwiseKind>(k);
}

// (n, c, s) from an (N, C, *spatial) or (N, C) array.
BatchNormArgs bn_geometry(const py::array& x, double eps, double momentum) {
  if (x.ndim() < 2) throw py::value_error("batch_norm input must be at least 2-D");
  BatchNormArgs a;
  a.n = x.shape(0);
  a.c = x.shape(1);
  a.s = 1;
  for (py::ssize_t d = 2; d < x.ndim(); ++d) a.s *= x.shape(d);
  a.eps = eps;
  a.momentum = momentum;
  a.threads = get_num_threads();
  return a;
}

void batch_norm_forward(const Backend& be, const py::array& x, const py::object& weight, const py::object& bias,
                        const py::object& running_mean, const py::object& running_var, py::array& y, bool training,
                        double momentum, double eps, const py::object& save_mean, const py::object& save_invstd,
                        int activation) {
  dispatch_float(x, "input", [&](auto tag) {
    using T = decltype(tag);
    const BatchNormArgs a = bn_geometry(x, eps, momentum);
    const T* xp = in_ptr<T>(x, "input");
    T* yp = out_ptr<T>(y, "out", numel(x));
    const T* w = opt_in_ptr<T>(weight, "weight", a.c);
    const T* b = opt_in_ptr<T>(bias, "bias", a.c);
    // Updated in place in training; only read in eval, where read-only arrays are fine (the
    // kernel writes them only when training).
    T* rm = training ? opt_out_ptr<T>(running_mean, "running_mean", a.c)
                     : const_cast<T*>(opt_in_ptr<T>(running_mean, "running_mean", a.c));
    T* rv = training ? opt_out_ptr<T>(running_var, "running_var", a.c)
                     : const_cast<T*>(opt_in_ptr<T>(running_var, "running_var", a.c));
    T* sm = opt_out_ptr<T>(save_mean, "save_mean", a.c);
    T* si = opt_out_ptr<T>(save_invstd, "save_invstd", a.c);
    if (training ? (!sm || !si || (rm == nullptr) != (rv == nullptr)) : (!rm || !rv))
      throw py::value_error("training needs save_mean/save_invstd; eval needs running_mean/running_var");
    const Activation act = to_activation(activation);
    py::gil_scoped_release release;
    be.table->of<T>().batch_norm_forward(a, training, xp, w, b, rm, rv, yp, sm, si, act);
  });
}

void batch_norm_backward(const Backend& be, const py::array& grad_y, const py::array& x, const py::object& weight,
                         const py::array& mean, const py::array& invstd, bool training, const py::object& grad_x,
                         const py::object& grad_w, const py::object& grad_b, int activation,
                         const py::object& output) {
  dispatch_float(x, "input", [&](auto tag) {
    using T = decltype(tag);
    const BatchNormArgs a = bn_geometry(x, 0, 0);
    const T* xp = in_ptr<T>(x, "input");
    const T* gy = in_ptr<T>(grad_y, "grad_output", numel(x));
    const T* w = opt_in_ptr<T>(weight, "weight", a.c);
    const T* m = in_ptr<T>(mean, "mean", a.c);
    const T* is = in_ptr<T>(invstd, "invstd", a.c);
    T* gx = opt_out_ptr<T>(grad_x, "grad_input", numel(x));
    T* gw = opt_out_ptr<T>(grad_w, "grad_weight", a.c);
    T* gb = opt_out_ptr<T>(grad_b, "grad_bias", a.c);
    const Activation act = to_activation(activation);
    const T* yp = opt_in_ptr<T>(output, "output", numel(x));
    if (act != Activation::none && !yp) throw py::value_error("a fused activation's backward needs the forward's output");
    py::gil_scoped_release release;
    be.table->of<T>().batch_norm_backward(a, training, gy, xp, w, m, is, gx, gw, gb, act, yp);
  });
}

void activation(const Backend& be, int kind, const py::array& x, py::array& y, double alpha) {
  dispatch_float(x, "input", [&](auto tag) {
    using T = decltype(tag);
    const T* xp = in_ptr<T>(x, "input");
    T* yp = out_ptr<T>(y, "out", numel(x));
    const EltwiseKind k = to_kind(kind);
    py::gil_scoped_release release;
    be.table->of<T>().activation_forward(k, numel(x), xp, yp, alpha, get_num_threads());
  });
}

void activation_backward(const Backend& be, int kind, const py::array& saved, const py::array& grad_y,
                         py::array& grad_x, double alpha) {
  dispatch_float(saved, "input", [&](auto tag) {
    using T = decltype(tag);
    const int64_t n = numel(saved);
    const T* sp = in_ptr<T>(saved, "input");
    const T* gy = in_ptr<T>(grad_y, "grad_output", n);
    T* gx = out_ptr<T>(grad_x, "grad_input", n);
    const EltwiseKind k = to_kind(kind);
    py::gil_scoped_release release;
    be.table->of<T>().activation_backward(k, n, sp, gy, gx, alpha, get_num_threads());
  });
}

void check_layout(const py::array& a, int64_t outer, int64_t dim, int64_t inner) {
  if (outer < 0 || dim < 0 || inner < 0 || outer * dim * inner != numel(a))
    throw py::value_error("outer * dim * inner must equal the array's size");
}

void softmax(const Backend& be, const py::array& x, py::array& y, int64_t outer, int64_t dim, int64_t inner,
             bool log) {
  dispatch_float(x, "input", [&](auto tag) {
    using T = decltype(tag);
    check_layout(x, outer, dim, inner);
    const T* xp = in_ptr<T>(x, "input");
    T* yp = out_ptr<T>(y, "out", numel(x));
    py::gil_scoped_release release;
    be.table->of<T>().softmax_forward(outer, dim, inner, xp, yp, log, get_num_threads());
  });
}

void softmax_backward(const Backend& be, const py::array& y, const py::array& grad_y, py::array& grad_x,
                      int64_t outer, int64_t dim, int64_t inner, bool log) {
  dispatch_float(y, "output", [&](auto tag) {
    using T = decltype(tag);
    check_layout(y, outer, dim, inner);
    const T* yp = in_ptr<T>(y, "output");
    const T* gy = in_ptr<T>(grad_y, "grad_output", numel(y));
    T* gx = out_ptr<T>(grad_x, "grad_input", numel(y));
    py::gil_scoped_release release;
    be.table->of<T>().softmax_backward(outer, dim, inner, yp, gy, gx, log, get_num_threads());
  });
}

// logits (n, c, inner) as a C-contiguous array of n * c * inner; target (n * inner) int64.
void cross_entropy(const Backend& be, const py::array& logits, const py::array& target, py::array& loss, int64_t n,
                   int64_t c, int64_t inner, int64_t ignore_index, double label_smoothing) {
  dispatch_float(logits, "input", [&](auto tag) {
    using T = decltype(tag);
    check_layout(logits, n, c, inner);
    const T* z = in_ptr<T>(logits, "input");
    const int64_t* t = in_ptr<int64_t>(target, "target", n * inner);
    T* l = out_ptr<T>(loss, "loss", n * inner);
    bool ok;
    {
      py::gil_scoped_release release;
      ok = be.table->of<T>().cross_entropy_forward(n, c, inner, z, t, l, ignore_index, label_smoothing,
                                                    get_num_threads());
    }
    if (!ok) throw py::value_error("target holds a class index outside [0, C) that is not ignore_index");
  });
}

void cross_entropy_backward(const Backend& be, const py::array& logits, const py::array& target,
                            const py::array& grad_loss, py::array& grad_logits, int64_t n, int64_t c, int64_t inner,
                            int64_t ignore_index, double label_smoothing) {
  dispatch_float(logits, "input", [&](auto tag) {
    using T = decltype(tag);
    check_layout(logits, n, c, inner);
    const T* z = in_ptr<T>(logits, "input");
    const int64_t* t = in_ptr<int64_t>(target, "target", n * inner);
    const T* gl = in_ptr<T>(grad_loss, "grad_loss", n * inner);
    T* gz = out_ptr<T>(grad_logits, "grad_input", numel(logits));
    py::gil_scoped_release release;
    be.table->of<T>().cross_entropy_backward(n, c, inner, z, t, gl, gz, ignore_index, label_smoothing,
                                             get_num_threads());
  });
}

void dropout(const Backend& be, const py::array& x, py::array& y, py::array& mask, double p, uint64_t seed) {
  dispatch_float(x, "input", [&](auto tag) {
    using T = decltype(tag);
    if (!(p >= 0 && p <= 1)) throw py::value_error("p must be in [0, 1]");
    const T* xp = in_ptr<T>(x, "input");
    T* yp = out_ptr<T>(y, "out", numel(x));
    uint8_t* mp = out_ptr<uint8_t>(mask, "mask", numel(x));
    py::gil_scoped_release release;
    be.table->of<T>().dropout_forward(numel(x), xp, yp, mp, p, seed, get_num_threads());
  });
}

void dropout_backward(const Backend& be, const py::array& grad_y, const py::array& mask, py::array& grad_x,
                      double scale) {
  dispatch_float(grad_y, "grad_output", [&](auto tag) {
    using T = decltype(tag);
    const T* gy = in_ptr<T>(grad_y, "grad_output");
    const uint8_t* mp = in_ptr<uint8_t>(mask, "mask", numel(grad_y));
    T* gx = out_ptr<T>(grad_x, "grad_input", numel(grad_y));
    py::gil_scoped_release release;
    be.table->of<T>().dropout_backward(numel(grad_y), gy, mp, gx, scale, get_num_threads());
  });
}

void add(const Backend& be, const py::array& a, const py::array& b, py::array& y) {
  dispatch_float(a, "input", [&](auto tag) {
    using T = decltype(tag);
    const T* ap = in_ptr<T>(a, "input");
    const T* bp = in_ptr<T>(b, "other", numel(a));
    T* yp = out_ptr<T>(y, "out", numel(a));
    py::gil_scoped_release release;
    be.table->of<T>().add(numel(a), ap, bp, yp, get_num_threads());
  });
}

void sgd_step(const Backend& be, py::array& param, const py::array& grad, const py::object& momentum_buffer,
              double lr, double momentum, double dampening, double weight_decay, bool nesterov, bool maximize,
              bool first) {
  dispatch_float(param, "param", [&](auto tag) {
    using T = decltype(tag);
    const int64_t n = numel(param);
    T* p = out_ptr<T>(param, "param");
    const T* g = in_ptr<T>(grad, "grad", n);
    T* buf = opt_out_ptr<T>(momentum_buffer, "momentum_buffer", n);
    if (momentum != 0 && !buf) throw py::value_error("momentum needs a momentum_buffer");
    SgdArgs s;
    s.lr = lr;
    s.momentum = momentum;
    s.dampening = dampening;
    s.weight_decay = weight_decay;
    s.nesterov = nesterov;
    s.maximize = maximize;
    s.first = first;
    py::gil_scoped_release release;
    be.table->of<T>().sgd_step(n, p, g, buf, s, get_num_threads());
  });
}

}  // namespace

void register_norm_eltwise(BackendClass& cls) {
  cls.def("batch_norm_forward", &batch_norm_forward, py::arg("x"), py::arg("weight"), py::arg("bias"),
          py::arg("running_mean"), py::arg("running_var"), py::arg("out"), py::arg("training"), py::arg("momentum"),
          py::arg("eps"), py::arg("save_mean"), py::arg("save_invstd"), py::arg("activation") = 0);
  cls.def("batch_norm_backward", &batch_norm_backward, py::arg("grad_output"), py::arg("x"), py::arg("weight"),
          py::arg("mean"), py::arg("invstd"), py::arg("training"), py::arg("grad_input"), py::arg("grad_weight"),
          py::arg("grad_bias"), py::arg("activation") = 0, py::arg("output") = py::none());
  cls.def("activation", &activation, py::arg("kind"), py::arg("x"), py::arg("out"), py::arg("alpha"));
  cls.def("activation_backward", &activation_backward, py::arg("kind"), py::arg("saved"), py::arg("grad_output"),
          py::arg("grad_input"), py::arg("alpha"));
  cls.def("softmax", &softmax, py::arg("x"), py::arg("out"), py::arg("outer"), py::arg("dim"), py::arg("inner"),
          py::arg("log"));
  cls.def("softmax_backward", &softmax_backward, py::arg("y"), py::arg("grad_output"), py::arg("grad_input"),
          py::arg("outer"), py::arg("dim"), py::arg("inner"), py::arg("log"));
  cls.def("cross_entropy", &cross_entropy, py::arg("logits"), py::arg("target"), py::arg("loss"), py::arg("n"),
          py::arg("c"), py::arg("inner"), py::arg("ignore_index"), py::arg("label_smoothing"));
  cls.def("cross_entropy_backward", &cross_entropy_backward, py::arg("logits"), py::arg("target"),
          py::arg("grad_loss"), py::arg("grad_input"), py::arg("n"), py::arg("c"), py::arg("inner"),
          py::arg("ignore_index"), py::arg("label_smoothing"));
  cls.def("dropout", &dropout, py::arg("x"), py::arg("out"), py::arg("mask"), py::arg("p"), py::arg("seed"));
  cls.def("dropout_backward", &dropout_backward, py::arg("grad_output"), py::arg("mask"), py::arg("grad_input"),
          py::arg("scale"));
  cls.def("add", &add, py::arg("a"), py::arg("b"), py::arg("out"));
  cls.def("sgd_step", &sgd_step, py::arg("param"), py::arg("grad"), py::arg("momentum_buffer"), py::arg("lr"),
          py::arg("momentum"), py::arg("dampening"), py::arg("weight_decay"), py::arg("nesterov"), py::arg("maximize"),
          py::arg("first"));
}

}  // namespace fastconv
