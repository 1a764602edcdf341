// A minimal parallel-for over plain threads (XLA's CPU handlers run on XLA's own threads; we do
// not block those on work scheduled back onto them).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace fit3d::cpu {

inline int num_workers(int64_t tasks) {
  const int hw = std::max(1u, std::thread::hardware_concurrency());
  return int(std::min<int64_t>(hw, std::max<int64_t>(tasks, 1)));
}

// Calls fn(task, worker) for task in [0, tasks); `worker` < num_workers(tasks) indexes per-worker
// scratch. Tasks are handed out dynamically so uneven tiles balance.
template <typename Fn>
void parallel_for(int64_t tasks, Fn&& fn) {
  const int workers = num_workers(tasks);
  if (workers == 1) {
    for (int64_t t = 0; t < tasks; ++t) fn(t, 0);
    return;
  }
  std::atomic<int64_t> next{0};
  std::vector<std::thread> pool;
  pool.reserve(workers);
  for (int w = 0; w < workers; ++w)
    pool.emplace_back([&, w] {
      for (int64_t t; (t = next.fetch_add(1)) < tasks;) fn(t, w);
    });
  for (auto& th : pool) th.join();
}

// Like parallel_for but task t always runs on worker t * workers / tasks (contiguous blocks), so
// per-worker partial sums, and hence results, do not depend on thread timing.
template <typename Fn>
void parallel_for_static(int64_t tasks, Fn&& fn) {
  const int workers = num_workers(tasks);
  std::vector<std::thread> pool;
  for (int w = 0; w < workers; ++w)
    pool.emplace_back([&, w] {
      for (int64_t t = tasks * w / workers; t < tasks * (w + 1) / workers; ++t) fn(t, w);
    });
  for (auto& th : pool) th.join();
}

// Splits [0, n) into contiguous chunks, one task each, for cheap per-element loops.
template <typename Fn>
void parallel_range(int64_t n, Fn&& fn) {
  const int64_t chunk = 4096;
  parallel_for((n + chunk - 1) / chunk, [&](int64_t t, int) {
    const int64_t end = std::min(n, (t + 1) * chunk);
    for (int64_t i = t * chunk; i < end; ++i) fn(i);
  });
}

}  // namespace fit3d::cpu
