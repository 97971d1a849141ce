// region_fuzzer: libFuzzer target for what a member may write into its group's shared region
// (docs/DESIGN.md, "Trust model"). The input is a program: each step either writes a value the
// input chooses at an offset it chooses into the region (any field of the header, the client
// table or the ring), or runs one operation of the server's Group (send, receive, maintain, a
// client's repair, stats, readiness, the barrier, a raised or lowered budget) or of a
// well-behaved client on its own mapping (push, pop, the barrier, bounded waits).
// Checks: nothing crashes (ASan/UBSan), nothing hangs (libFuzzer's -timeout), the server never
// copies more than a message's limit into its heap, and a second, untouched group keeps exact
// FIFO through it all.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/group.hpp"
#include "core/params.hpp"
#include "core/timer_queue.hpp"
#include "region/region.hpp"
#include "region_fuzz_support.hpp"

namespace {

using synchmess::core::Group;
using synchmess::region::Region;

using synchmess::fuzz::bytes_of;
using synchmess::fuzz::Input;
using synchmess::fuzz::world;
using synchmess::fuzz::World;

[[noreturn]] void broken(const char* what) {
  synchmess::fuzz::broken(std::string("region_fuzzer: ") + what);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  World& w = world();
  if (!w.params.set({.max_message_size = 4096, .max_storage_size = 1 << 20})) broken("params");
  // A fresh pair of groups per input: the victim, whose region the input writes, and a bystander.
  auto made = Region::create("victim", synchmess::region::kMinRingBytes);
  if (!made) return 0;  // out of memfds: nothing to test
  Group victim("victim", 1000, w.params, *w.timers, synchmess::core::Quotas::unlimited(),
               std::move(made.value()));
  Group bystander("bystander", 1000, w.params, *w.timers);
  auto attached = Region::attach(victim.region().fd());
  if (!attached) broken("attach");
  Region& client = attached.value();
  const auto slot = victim.region().open_client(4242);
  if (!slot) broken("no slot");
  client.set_notify_fd(victim.notify_fd());

  auto* base = reinterpret_cast<uint8_t*>(&victim.region().header());
  const uint64_t region_bytes = victim.region().region_bytes();
  std::vector<std::byte> buffer(client.max_payload() + 64);
  uint64_t bystander_sent = 0;
  uint64_t bystander_received = 0;

  Input input(data, size);
  for (int step = 0; step < 256 && !input.done(); ++step) {
    const uint8_t op = input.byte();
    switch (op % 16) {
      case 0:
      case 1:
      case 2: {  // a member writes a word anywhere: mostly the header
        const uint64_t where = op % 16 == 0 ? input.bytes(3) % region_bytes
                                            : input.bytes(2) % synchmess::region::kHeaderBytes;
        const uint64_t value = input.bytes(8);
        const int width = 1 << (input.byte() % 4);  // 1, 2, 4 or 8 bytes
        const uint64_t at = where - where % static_cast<uint64_t>(width);
        if (at + static_cast<uint64_t>(width) <= region_bytes) {
          std::memcpy(base + at, &value, static_cast<size_t>(width));  // one thread: no race
        }
        break;
      }
      case 3: {  // the server sends (device write)
        const std::string text(1 + input.byte() * 16, 's');
        (void)victim.send(bytes_of(text));
        break;
      }
      case 4: {  // the server receives (device read)
        auto received = victim.try_receive();
        if (received && received.value() && received.value()->size() > 4096) {
          broken("the server took a message larger than max_message_size into its heap");
        }
        break;
      }
      case 5:
        victim.maintain();
        break;
      case 6:
        (void)victim.region().repair_client(input.byte(), input.byte() % 2 == 0);
        break;
      case 7:
        (void)victim.stats();
        (void)victim.readiness();
        (void)victim.region().snapshot();
        break;
      case 8: {  // a well-behaved client pushes
        const std::string text(input.byte(), 'c');
        (void)client.push(bytes_of(text), *slot, 1 << 20, true);
        break;
      }
      case 9: {  // ... and pops
        uint32_t length = 0;
        if (client.pop(buffer, *slot, length) == Region::Take::kTaken &&
            length > client.max_payload()) {
          broken("a pop reported a length over the ring's limit");
        }
        break;
      }
      case 10: {  // the barrier, both doors
        const uint32_t generation = client.barrier_enter(*slot);
        if (input.byte() % 2 == 0) {
          (void)client.barrier_cancel(*slot, generation);
        } else {
          (void)victim.awake_barrier();
          client.barrier_left(*slot, generation);
        }
        break;
      }
      case 11:
        (void)client.wait_avail(client.header().avail_seq.load(), std::chrono::nanoseconds(1));
        (void)client.barrier_wait(client.barrier_generation(), std::chrono::nanoseconds(1));
        break;
      case 12:
        victim.on_region_activity();
        break;
      case 13:
        (void)w.params.set({.max_message_size = 1 + input.bytes(2) % 4096,
                            .max_storage_size = 1 + input.bytes(3)});
        victim.on_params_changed();
        break;
      case 14:
        (void)victim.region().trim();
        break;
      case 15: {  // the bystander: exact FIFO whatever happens next door
        const std::string text = "b" + std::to_string(bystander_sent);
        if (bystander.send(bytes_of(text))) ++bystander_sent;
        auto received = bystander.try_receive();
        if (received && received.value()) {
          const std::string got(reinterpret_cast<const char*>(received.value()->data().data()),
                                received.value()->size());
          if (got != "b" + std::to_string(bystander_received++)) {
            broken("the bystander group lost its order");
          }
        }
        break;
      }
    }
  }
  victim.close(std::errc::identifier_removed);
  return 0;
}
