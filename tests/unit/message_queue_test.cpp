// IndexRing and MessageQueue: sequential behaviour and a multithreaded fuzz test that checks
// exactly-once delivery and per-producer FIFO order.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "core/index_ring.hpp"
#include "core/message_queue.hpp"

using synchmess::core::HazardDomain;
using synchmess::core::IndexRing;
using synchmess::core::Message;
using synchmess::core::MessagePtr;
using synchmess::core::MessageQueue;

namespace {

MessagePtr make_message(uint32_t producer, uint32_t sequence) {
  std::byte bytes[8];
  std::memcpy(bytes, &producer, 4);
  std::memcpy(bytes + 4, &sequence, 4);
  return Message::create(bytes);
}

std::pair<uint32_t, uint32_t> decode(const Message& message) {
  uint32_t producer = 0;
  uint32_t sequence = 0;
  REQUIRE(message.size() == 8);
  std::memcpy(&producer, message.data().data(), 4);
  std::memcpy(&sequence, message.data().data() + 4, 4);
  return {producer, sequence};
}

}  // namespace

TEST_CASE("IndexRing: an empty ring dequeues nothing, a full one gives its indices in order") {
  using Ring = IndexRing<3>;
  Ring empty(Ring::Init::kEmpty);
  CHECK(empty.dequeue() == Ring::kNone);
  CHECK(empty.dequeue(true) == Ring::kNone);

  Ring full(Ring::Init::kFull);
  for (uint64_t i = 0; i < Ring::kCapacity; ++i)
    CHECK(full.dequeue() == i);
  CHECK(full.dequeue() == Ring::kNone);
}

TEST_CASE("IndexRing: FIFO across many wrap-arounds, and close stops enqueues") {
  using Ring = IndexRing<3>;
  Ring ring(Ring::Init::kEmpty);
  uint64_t next_in = 0;
  uint64_t next_out = 0;
  for (int round = 0; round < 1000; ++round) {
    const int burst = 1 + round % static_cast<int>(Ring::kCapacity);
    for (int i = 0; i < burst; ++i)
      REQUIRE(ring.enqueue(next_in++ % Ring::kCapacity));
    for (int i = 0; i < burst; ++i)
      REQUIRE(ring.dequeue() == next_out++ % Ring::kCapacity);
    REQUIRE(ring.dequeue() == Ring::kNone);
  }
  REQUIRE(ring.enqueue(5));
  ring.close();
  CHECK(ring.closed());
  CHECK_FALSE(ring.enqueue(6));
  CHECK(ring.dequeue(true) == 5);
  CHECK(ring.dequeue(true) == Ring::kNone);
}

TEST_CASE("MessageQueue: FIFO through several segments, whole messages, then empty") {
  MessageQueue queue;
  const uint32_t count = 5 * MessageQueue::kSegmentCapacity + 3;
  for (uint32_t i = 0; i < count; ++i)
    REQUIRE(queue.push(make_message(0, i)));
  for (uint32_t i = 0; i < count; ++i) {
    MessagePtr message = queue.pop();
    REQUIRE(message);
    CHECK(decode(*message).second == i);
  }
  CHECK_FALSE(queue.pop());
  // Interleaved use after the segments were retired.
  for (uint32_t i = 0; i < 3 * MessageQueue::kSegmentCapacity; ++i) {
    REQUIRE(queue.push(make_message(1, i)));
    REQUIRE(queue.push(make_message(1, i)));
    REQUIRE(queue.pop());
  }
  HazardDomain::instance().reclaim_now();
}

TEST_CASE("MessageQueue: the destructor frees what is still queued") {
  MessageQueue queue;
  for (uint32_t i = 0; i < 3 * MessageQueue::kSegmentCapacity; ++i) {
    REQUIRE(queue.push(make_message(0, i)));
  }
  // Leak checkers (ASan in the debug preset) fail the run if anything is left behind.
}

namespace {

template <class Queue>
void fuzz_queue(uint32_t per_producer) {
  for (const auto& [producers, consumers] : {std::pair{1, 1}, {2, 2}, {4, 2}, {2, 4}, {4, 4}}) {
    CAPTURE(producers);
    CAPTURE(consumers);
    const uint32_t kPerProducer = per_producer;
    Queue queue;
    std::atomic<bool> producing_done{false};
    std::vector<std::vector<uint32_t>> seen_by_consumer(consumers);
    std::vector<std::vector<uint32_t>> last_by_consumer(consumers,
                                                        std::vector<uint32_t>(producers, 0));
    std::vector<std::atomic<uint32_t>> delivered(static_cast<std::size_t>(producers) *
                                                 kPerProducer);
    std::atomic<bool> order_ok{true};

    std::vector<std::thread> threads;
    for (int p = 0; p < producers; ++p) {
      threads.emplace_back([&, p] {
        for (uint32_t i = 1; i <= kPerProducer; ++i) {
          while (!queue.push(make_message(static_cast<uint32_t>(p), i))) {
          }
          if (i % 1024 == 0) std::this_thread::yield();  // vary the interleavings
        }
      });
    }
    for (int c = 0; c < consumers; ++c) {
      threads.emplace_back([&, c] {
        for (;;) {
          MessagePtr message = queue.pop();
          if (!message) {
            if (producing_done.load()) {
              message = queue.pop();
              if (!message) return;
            } else {
              std::this_thread::yield();
              continue;
            }
          }
          const auto [producer, sequence] = decode(*message);
          // A consumer sees each producer's messages in increasing order.
          if (sequence <= last_by_consumer[c][producer]) order_ok.store(false);
          last_by_consumer[c][producer] = sequence;
          delivered[producer * kPerProducer + (sequence - 1)].fetch_add(1);
        }
      });
    }
    for (int p = 0; p < producers; ++p)
      threads[p].join();
    producing_done.store(true);
    for (std::size_t t = producers; t < threads.size(); ++t)
      threads[t].join();

    CHECK(order_ok.load());
    std::size_t missing = 0;
    std::size_t duplicated = 0;
    for (auto& count : delivered) {
      missing += count.load() == 0;
      duplicated += count.load() > 1;
    }
    CHECK(missing == 0);
    CHECK(duplicated == 0);
    CHECK_FALSE(queue.pop());
  }
}

}  // namespace

TEST_CASE("MessageQueue fuzz: producers x consumers, exactly once, per-producer FIFO") {
  fuzz_queue<MessageQueue>(20000);
}

TEST_CASE("MessageQueue fuzz with 8-slot segments: constant segment changes under contention") {
  fuzz_queue<synchmess::core::BasicMessageQueue<3>>(20000);
}

TEST_CASE("HazardGuard: a sticky slot protects its node until the thread protects another one") {
  using synchmess::core::HazardGuard;
  using synchmess::core::Retirable;
  struct Node : Retirable {
    bool* reclaimed;
    explicit Node(bool* flag) : reclaimed(flag) {
      reclaim = [](Retirable* self) noexcept {
        auto* node = static_cast<Node*>(self);
        *node->reclaimed = true;
        delete node;
      };
    }
  };
  HazardDomain& domain = HazardDomain::instance();
  bool first_reclaimed = false;
  bool second_reclaimed = false;
  auto* first = new Node(&first_reclaimed);
  auto* second = new Node(&second_reclaimed);
  std::atomic<Node*> source{first};
  {
    HazardGuard guard(0, HazardGuard::Lifetime::kSticky);
    CHECK(guard.protect(source) == first);
  }
  CHECK(domain.is_protected(first));  // the guard is gone, the slot still holds it
  source.store(second);
  domain.retire(first);
  domain.reclaim_now();
  CHECK_FALSE(first_reclaimed);
  {
    HazardGuard guard(0, HazardGuard::Lifetime::kSticky);
    CHECK(guard.protect(source) == second);  // the slot moves on
  }
  domain.reclaim_now();
  CHECK(first_reclaimed);
  {
    HazardGuard guard(0);  // kClear: empty again when the guard goes
    CHECK(guard.protect(source) == second);
  }
  CHECK_FALSE(domain.is_protected(second));
  source.store(nullptr);
  domain.retire(second);
  domain.reclaim_now();
  CHECK(second_reclaimed);
}
