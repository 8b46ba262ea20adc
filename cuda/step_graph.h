// Which forward steps to record as CUDA graphs and replay: plain C++, so the policy is tested on
// the CPU. A step is keyed by everything that fixes its launches (shapes, buffer generation).
// Its first sighting runs eagerly (scratch buffers grow, kernel attributes get set: neither may
// happen while a stream is being captured); the second is captured and launched; later ones
// replay. A key whose capture failed runs eagerly from then on. At most `capacity` recordings are
// kept, the least recently used going first.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <unordered_map>
#include <unordered_set>
#include <utility>

namespace unmask::cuda_plan {

enum class StepAction { Eager, Capture, Replay };

template <class Recording>
class StepGraphCache {
 public:
  StepGraphCache(size_t capacity, std::function<void(Recording&)> destroy)
      : capacity_(capacity), destroy_(std::move(destroy)) {}
  ~StepGraphCache() { clear(); }
  StepGraphCache(const StepGraphCache&) = delete;
  StepGraphCache& operator=(const StepGraphCache&) = delete;

  StepAction next(uint64_t key) {
    if (capacity_ == 0 || failed_.count(key)) return StepAction::Eager;
    if (auto it = index_.find(key); it != index_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);  // most recently used first
      return StepAction::Replay;
    }
    return seen_.insert(key).second ? StepAction::Eager : StepAction::Capture;
  }

  // The recording of `key`; valid after next(key) said Replay and until the next store/clear.
  Recording& recording(uint64_t key) { return index_.at(key)->second; }

  void store(uint64_t key, Recording r) {
    if (lru_.size() >= capacity_) {
      destroy_(lru_.back().second);
      index_.erase(lru_.back().first);
      lru_.pop_back();
    }
    lru_.emplace_front(key, std::move(r));
    index_[key] = lru_.begin();
  }

  void failed(uint64_t key) { failed_.insert(key); }

  // Every recording refers to buffers that are about to move: drop them all (sightings too, so
  // the next occurrence runs eagerly once more and regrows what it needs).
  void clear() {
    for (auto& [key, r] : lru_) destroy_(r);
    lru_.clear();
    index_.clear();
    seen_.clear();
  }

  size_t size() const { return lru_.size(); }

 private:
  size_t capacity_;
  std::function<void(Recording&)> destroy_;
  std::list<std::pair<uint64_t, Recording>> lru_;
  std::unordered_map<uint64_t, typename std::list<std::pair<uint64_t, Recording>>::iterator> index_;
  std::unordered_set<uint64_t> seen_, failed_;
};

}  // namespace unmask::cuda_plan
