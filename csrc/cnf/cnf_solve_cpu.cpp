// A whole ODE solve of the CNF on the CPU: torchdiffeq's dopri5 (RKAdaptiveStepsizeODESolver
// with the Dormand-Prince-Shampine tableau, torchdiffeq 0.2.x) re-implemented step for step
// around the fused dynamics kernel (cnf_dynamics_cpu.cpp), so that a sampling or likelihood
// solve runs no Python and no per-step tensor ops. What it follows from torchdiffeq, so that
// both produce the same result up to rounding:
//  - time runs forward: a solve from t0 > t1 integrates s = -t from -t0 to -t1 with the
//    right-hand side -f(-s, y) (torchdiffeq's _ReverseFunc); times are float64, cast to the
//    state's dtype where the dynamics read them; a stage at the end of a step reads the time
//    one ulp below it (Perturb.PREV);
//  - the state is z [B, D] (sampling) or z and logdet [B] (likelihood: d logdet/dt = div);
//    error norms are the RMS over every entry (the max of the two parts' RMS for the pair,
//    torchdiffeq's mixed norm for tuple states); tolerances atol + rtol * |y|;
//  - the first step (Hairer, Norsett & Wanner II.4, two evaluations), acceptance when the
//    error ratio is <= 1, the next step dt * min(10, max(0.9 / ratio^(1/5), 0.2 or 1));
//  - steps are not clipped at the end time: the last one runs past it and the result is the
//    step's quartic interpolant (y, y at the middle, f at both ends) at the end time.
// The stage arithmetic runs in the state's dtype (as torchdiffeq casts its tableau and dt).
// Reference: torchdiffeq.odeint(..., method="dopri5") on the same dynamics; tests compare the
// two (python_tests/test_cnf_solve.py).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "../common/checks.h"
#include "cnf.h"

namespace cgnf {

namespace {

// Dormand-Prince (5)4 with Shampine's dense output, as torchdiffeq's dopri5.py.
constexpr double kAlpha[6] = {1.0 / 5, 3.0 / 10, 4.0 / 5, 8.0 / 9, 1.0, 1.0};
constexpr double kBeta[6][6] = {
    {1.0 / 5, 0, 0, 0, 0, 0},
    {3.0 / 40, 9.0 / 40, 0, 0, 0, 0},
    {44.0 / 45, -56.0 / 15, 32.0 / 9, 0, 0, 0},
    {19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729, 0, 0},
    {9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656, 0},
    {35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84},
};
constexpr double kError[7] = {35.0 / 384 - 1951.0 / 21600,
                              0,
                              500.0 / 1113 - 22642.0 / 50085,
                              125.0 / 192 - 451.0 / 720,
                              -2187.0 / 6784 - -12231.0 / 42400,
                              11.0 / 84 - 649.0 / 6300,
                              -1.0 / 60.0};
constexpr double kMid[7] = {6025192743.0 / 30085553152.0 / 2,    0,
                            51252292925.0 / 65400821598.0 / 2,   -2691868925.0 / 45128329728.0 / 2,
                            187940372067.0 / 1594534317056.0 / 2, -1776094331.0 / 19743644256.0 / 2,
                            11237099.0 / 235043384.0 / 2};

template <typename T>
struct Solver {
  CnfForwardPlan<T> plan;  // the dynamics
  int64_t divergence;
  bool reversed;
  // the state: n = B * D entries of z, then (with a divergence) B of logdet
  int64_t nz, n;
  int64_t nfe = 0;

  // f at solver time s (already in the state's dtype, perturbed as asked) into out[0, n).
  void eval(T s, const T* y, T* out) {
    plan(reversed ? -s : s, y, out, divergence != kCnfNone ? out + nz : nullptr);
    ++nfe;
    if (reversed)
      for (int64_t i = 0; i < n; ++i) out[i] = -out[i];
  }

  // torchdiffeq's norm of x / scale: RMS over all entries, or the max of both parts' RMS.
  template <typename F>
  T norm(F ratio) const {
    double a = 0, b = 0;
    for (int64_t i = 0; i < nz; ++i) {
      const double r = double(ratio(i));
      a += r * r;
    }
    double out = std::sqrt(a / double(nz));
    if (n > nz) {
      for (int64_t i = nz; i < n; ++i) {
        const double r = double(ratio(i));
        b += r * r;
      }
      out = std::max(out, std::sqrt(b / double(n - nz)));
    }
    return T(out);
  }
};

// The adjoint's backward solve (torchdiffeq's odeint_adjoint, backward pass): the augmented
// state [a_t (1), y (ny: z, then logdet), a_y (ny), a_params (P)] integrated from t1 back to t0
// with the right-hand side (torchdiffeq's augmented_dynamics)
//   ( -a_y^T df/dt, f(t, y), -a_y^T df/dy, -a_y^T df/dparams )
// (f = (dz/dt, div); a_y^T df/dv = a_z^T d(dz/dt)/dv + a_logdet d(div)/dv, from cnf_adjoint_cpu),
// and torchdiffeq's default adjoint norm: the max of |a_t|, the state norm of y and of a_y (the
// mixed norm of the pair z, logdet) and the RMS of each parameter's adjoint.
template <typename T>
struct AdjSolver {
  CnfAdjointPlan<T> plan;  // the adjoint's dynamics
  int64_t B, divergence;
  bool reversed;
  int64_t nz, ny, n;
  std::vector<int64_t> seg;     // the norm's segments: [seg[i], seg[i + 1])
  std::vector<int64_t> gw_off;  // per weight, its adjoint's offset in the state (or -1: not a parameter)
  int64_t gc_off = -1;          // c's adjoint's offset (or -1)
  std::vector<T> az, adiv;
  int64_t nfe = 0;
  std::vector<T*> gw;  // per weight, where its adjoint's derivative goes (or nullptr)

  void eval(T s, const T* y, T* out) {
    T t = reversed ? -s : s;
    const bool div = divergence != kCnfNone;
    for (int64_t i = 0; i < nz; ++i) az[i] = -y[1 + ny + i];
    if (div)
      for (int64_t i = 0; i < B; ++i) adiv[i] = -y[1 + ny + nz + i];
    for (size_t i = 0; i < gw.size(); ++i) gw[i] = gw_off[i] >= 0 ? out + gw_off[i] : nullptr;
    plan(t, y + 1, az.data(), div ? adiv.data() : nullptr, out + 1, div ? out + 1 + nz : nullptr, out,
         out + 1 + ny, gc_off >= 0 ? out + gc_off : nullptr, gw);
    for (int64_t i = 1 + ny + nz; i < 1 + 2 * ny; ++i) out[i] = T(0);  // nothing depends on logdet
    ++nfe;
    if (reversed)
      for (int64_t i = 0; i < n; ++i) out[i] = -out[i];
  }

  template <typename F>
  T norm(F ratio) const {
    double out = 0;
    for (size_t k = 0; k + 1 < seg.size(); ++k) {
      double a = 0;
      for (int64_t i = seg[k]; i < seg[k + 1]; ++i) {
        const double r = double(ratio(i));
        a += r * r;
      }
      out = std::max(out, std::sqrt(a / double(seg[k + 1] - seg[k])));
    }
    return T(out);
  }
};

template <typename T, typename Sv>
int64_t solve(Sv& S, T* state, double t0, double t1, double rtol_d, double atol_d, int64_t max_steps) {
  const int64_t n = S.n;
  const T rtol = T(rtol_d), atol = T(atol_d);
  // torchdiffeq builds t as a tensor of the state's dtype, then solves in float64.
  double s0 = double(T(t0)), s1 = double(T(t1));
  if (S.reversed) s0 = -s0, s1 = -s1;
  std::vector<T> buf(size_t(n) * 16);
  T* y0 = buf.data();
  T* k[7];
  for (int i = 0; i < 7; ++i) k[i] = y0 + n * (1 + i);
  T* yi = y0 + n * 8;
  T* coef[5];  // interpolant of the last accepted step: e, d, c, b, a
  for (int i = 0; i < 5; ++i) coef[i] = y0 + n * (9 + i);
  T* scale = y0 + n * 14;
  T* f1 = y0 + n * 15;
  std::memcpy(y0, state, sizeof(T) * size_t(n));
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(double(y0[i]))) throw std::runtime_error("cnf_solve: non-finite values in the state at t0");
  for (int i = 0; i < 5; ++i) std::memcpy(coef[i], y0, sizeof(T) * size_t(n));  // [y0] * 5, as torchdiffeq

  // f0 and the first step (_select_initial_step with order 4).
  S.eval(T(s0), y0, k[0]);
  for (int64_t i = 0; i < n; ++i) scale[i] = atol + std::abs(y0[i]) * rtol;
  const T d0 = S.norm([&](int64_t i) { return y0[i] / scale[i]; });
  const T d1 = S.norm([&](int64_t i) { return k[0][i] / scale[i]; });
  const T h0 = (d0 < T(1e-5) || d1 < T(1e-5)) ? T(1e-6) : T(T(0.01) * d0 / d1);
  for (int64_t i = 0; i < n; ++i) yi[i] = y0[i] + h0 * k[0][i];
  S.eval(T(s0 + double(h0)), yi, f1);
  const T d2 = std::abs(S.norm([&](int64_t i) { return (f1[i] - k[0][i]) / scale[i]; }) / h0);
  T h1;
  if (d1 <= T(1e-15) && d2 <= T(1e-15))
    h1 = std::max(T(1e-6), T(h0 * T(1e-3)));
  else
    h1 = T(std::pow(T(T(0.01) / std::max(d1, d2)), T(1.0 / 5.0)));
  double dt = double(std::min(T(100) * h0, h1));

  double ta = s0, tb = s0;  // the last step's interval (the interpolant's)
  int64_t steps = 0;
  while (s1 > tb) {
    if (steps++ >= max_steps)
      throw std::runtime_error("cnf_solve: more than " + std::to_string(max_steps) + " steps (the dynamics are too stiff for rtol/atol)");
    if (!std::isfinite(dt)) dt = 0.0;
    const double t0s = tb;
    const double t1s = t0s + dt;
    if (!(t1s > t0s)) {
      char msg[160];
      std::snprintf(msg, sizeof msg, "cnf_solve: the step size underflowed at t = %.17g (dt = %g; non-finite dynamics?)",
                    S.reversed ? -t0s : t0s, dt);
      throw std::runtime_error(msg);
    }
    for (int64_t i = 0; i < n; ++i)
      if (!std::isfinite(double(y0[i]))) throw std::runtime_error("cnf_solve: non-finite values in the state");
    // One Runge-Kutta step in the state's dtype.
    const T t0T = T(t0s), dtT = T(dt), t1T = T(t1s);
    for (int st = 0; st < 6; ++st) {
      T coeffs[6];
      for (int j = 0; j <= st; ++j) coeffs[j] = T(kBeta[st][j]) * dtT;
      for (int64_t i = 0; i < n; ++i) {
        T acc = 0;
        for (int j = 0; j <= st; ++j) acc += k[j][i] * coeffs[j];
        yi[i] = y0[i] + acc;
      }
      const T ts = kAlpha[st] == 1.0 ? std::nextafter(t1T, T(t1T - T(1))) : T(t0T + T(kAlpha[st]) * dtT);
      if (st == 5) std::memcpy(f1, yi, sizeof(T) * size_t(n));  // y1 (the last stage's point), kept in f1
      S.eval(ts, yi, k[st + 1]);
    }
    T* y1 = f1;
    T ce[7];
    for (int j = 0; j < 7; ++j) ce[j] = dtT * T(kError[j]);
    const T ratio = S.norm([&](int64_t i) {
      T err = 0;
      for (int j = 0; j < 7; ++j) err += k[j][i] * ce[j];
      return err / (atol + rtol * std::max(std::abs(y0[i]), std::abs(y1[i])));
    });
    const bool accept = ratio <= T(1);
    if (accept) {
      T cm[7];
      for (int j = 0; j < 7; ++j) cm[j] = dtT * T(kMid[j]);
      for (int64_t i = 0; i < n; ++i) {
        T acc = 0;
        for (int j = 0; j < 7; ++j) acc += k[j][i] * cm[j];
        const T ym = y0[i] + acc, a0 = y0[i], a1 = y1[i], g0 = k[0][i], g1 = k[6][i];
        coef[4][i] = T(2) * dtT * (g1 - g0) - T(8) * (a1 + a0) + T(16) * ym;
        coef[3][i] = dtT * (T(5) * g0 - T(3) * g1) + T(18) * a0 + T(14) * a1 - T(32) * ym;
        coef[2][i] = dtT * (g1 - T(4) * g0) - T(11) * a0 - T(5) * a1 + T(16) * ym;
        coef[1][i] = dtT * g0;
        coef[0][i] = a0;
        y0[i] = a1;
        k[0][i] = g1;  // FSAL: f at the new point
      }
      ta = t0s;
      tb = t1s;
    } else {
      ta = tb = t0s;
    }
    // _optimal_step_size (safety 0.9, ifactor 10, dfactor 0.2, order 5), in float64.
    const double r = double(ratio);
    if (std::isnan(r)) {
      dt = 0.0;  // as torchdiffeq: a NaN ratio makes the next step NaN, then 0, and the solve stops
    } else if (r == 0.0) {
      dt *= 10.0;
    } else {
      const double dfactor = r < 1.0 ? 1.0 : 0.2;
      dt *= std::min(10.0, std::max(0.9 / std::pow(r, 1.0 / 5.0), dfactor));
    }
  }
  // The interpolant at s1 (x in [0, 1]; x = 1 when the last step ended exactly there).
  const T x = T((s1 - ta) / (tb - ta));
  for (int64_t i = 0; i < n; ++i) {
    T total = coef[0][i] + x * coef[1][i];
    T xp = x;
    for (int j = 2; j < 5; ++j) {
      xp = xp * x;
      total = total + xp * coef[j][i];
    }
    state[i] = total;
  }
  return S.nfe;
}

}  // namespace

int64_t cnf_solve_dopri5_cpu(int64_t state, int64_t c, int64_t noise, const std::vector<int64_t>& weights,
                             const std::vector<int64_t>& widths, int64_t B, int64_t C, int64_t activation,
                             int64_t divergence, bool float64, double t0, double t1, double rtol, double atol,
                             int64_t max_steps, int64_t num_threads) {
  check_cnf("cnf_solve_dopri5", B, C, weights, widths, activation, divergence, {{state, "state"}});
  if (C > 0) check_ptr(c, "c", B);
  if (divergence == kCnfHutchinson) check_ptr(noise, "noise", B);
  check_arg(std::isfinite(t0) && std::isfinite(t1) && t0 != t1, "cnf_solve_dopri5: t0 and t1 must be finite and differ");
  check_arg(rtol > 0 && atol > 0 && std::isfinite(rtol) && std::isfinite(atol),
            "cnf_solve_dopri5: rtol and atol must be positive and finite");
  check_arg(max_steps >= 1, "cnf_solve_dopri5: max_steps must be >= 1");
  if (B == 0) return 0;
  const int64_t nz = B * widths.front();
  const int64_t n = nz + (divergence != kCnfNone ? B : 0);
  if (float64) {
    Solver<double> S{cnf_forward_plan_cpu<double>(c, noise, weights, widths, B, C, activation, divergence, num_threads),
                     divergence, t1 < t0, nz, n};
    return solve(S, reinterpret_cast<double*>(state), t0, t1, rtol, atol, max_steps);
  }
  Solver<float> S{cnf_forward_plan_cpu<float>(c, noise, weights, widths, B, C, activation, divergence, num_threads),
                  divergence, t1 < t0, nz, n};
  return solve(S, reinterpret_cast<float*>(state), t0, t1, rtol, atol, max_steps);
}

namespace {
template <typename T>
int64_t adjoint_solve(int64_t state, int64_t c, int64_t noise, const std::vector<int64_t>& weights,
                      const std::vector<int64_t>& widths, const std::vector<int64_t>& params, int64_t B, int64_t C,
                      int64_t activation, int64_t divergence, double t0, double t1, double rtol, double atol,
                      int64_t max_steps, int64_t num_threads) {
  const int64_t nz = B * widths.front(), ny = nz + (divergence != kCnfNone ? B : 0);
  AdjSolver<T> S{cnf_adjoint_plan_cpu<T>(c, noise, weights, widths, B, C, activation, divergence, num_threads), B,
                 divergence, t1 < t0, nz, ny, 0};
  S.gw.assign(weights.size(), nullptr);
  S.az.resize(size_t(nz));
  S.adiv.resize(size_t(B));
  S.gw_off.assign(weights.size(), -1);
  S.seg = {0, 1, 1 + nz};
  if (ny > nz) S.seg.push_back(1 + ny);
  S.seg.push_back(1 + ny + nz);
  if (ny > nz) S.seg.push_back(1 + 2 * ny);
  int64_t off = 1 + 2 * ny;
  for (int64_t q : params) {
    int64_t size;
    if (q < 0) {
      check_arg(S.gc_off < 0 && C > 0, "cnf_adjoint_solve: params may name c (-1) once, and only when C > 0");
      S.gc_off = off, size = B * C;
    } else {
      check_arg(q < int64_t(weights.size()) && S.gw_off[q] < 0,
                "cnf_adjoint_solve: params must name distinct weights (0 .. 5L - 1) or c (-1)");
      const int64_t l = q / 5, part = q % 5, in = widths[l], out = widths[l + 1];
      const int64_t sizes[5] = {out * in, out, out * (1 + C), out, out * (1 + C)};
      S.gw_off[q] = off, size = sizes[part];
    }
    off += size;
    S.seg.push_back(off);
  }
  S.n = off;
  return solve(S, reinterpret_cast<T*>(state), t0, t1, rtol, atol, max_steps);
}
}  // namespace

int64_t cnf_adjoint_solve_dopri5_cpu(int64_t state, int64_t c, int64_t noise, const std::vector<int64_t>& weights,
                                     const std::vector<int64_t>& widths, const std::vector<int64_t>& params,
                                     int64_t B, int64_t C, int64_t activation, int64_t divergence, bool float64,
                                     double t0, double t1, double rtol, double atol, int64_t max_steps,
                                     int64_t num_threads) {
  check_cnf("cnf_adjoint_solve_dopri5", B, C, weights, widths, activation, divergence, {{state, "state"}});
  if (C > 0) check_ptr(c, "c", B);
  if (divergence == kCnfHutchinson) check_ptr(noise, "noise", B);
  check_arg(std::isfinite(t0) && std::isfinite(t1) && t0 != t1,
            "cnf_adjoint_solve_dopri5: t0 and t1 must be finite and differ");
  check_arg(rtol > 0 && atol > 0 && std::isfinite(rtol) && std::isfinite(atol),
            "cnf_adjoint_solve_dopri5: rtol and atol must be positive and finite");
  check_arg(max_steps >= 1, "cnf_adjoint_solve_dopri5: max_steps must be >= 1");
  if (B == 0) return 0;
  if (float64)
    return adjoint_solve<double>(state, c, noise, weights, widths, params, B, C, activation, divergence, t0, t1, rtol,
                                 atol, max_steps, num_threads);
  return adjoint_solve<float>(state, c, noise, weights, widths, params, B, C, activation, divergence, t0, t1, rtol,
                              atol, max_steps, num_threads);
}

}  // namespace cgnf
