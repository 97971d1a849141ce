#include "hostile.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <synchmess/synchmess.h>

#include "region/layout.hpp"
#include "region/region.hpp"

namespace synchmess::it {
namespace {

using region::Header;
using region::RecordHeader;
using region::RecordState;

std::string errno_text(int error) {
  const char* name = strerrorname_np(error);
  return name != nullptr ? name : std::to_string(error);
}

RecordHeader& record_at(region::Region& mapped, uint64_t position) {
  return *reinterpret_cast<RecordHeader*>(reinterpret_cast<char*>(&mapped.header()) +
                                          region::kRingOffset +
                                          (position & (mapped.ring_bytes() - 1)));
}

// The smallest message a sender makes: one byte (a record of 32 bytes).
constexpr uint64_t kSpan = region::record_span(1);

// One-byte records of `state` over [start, end), owned by `slot`; records already so are left
// alone (their cache lines stay where they are).
void forge_records(region::Region& mapped, uint64_t start, uint64_t end, uint16_t slot,
                   RecordState state) {
  for (uint64_t position = start; position < end; position += kSpan) {
    RecordHeader& record = record_at(mapped, position);
    const uint64_t tag = region::make_tag(position, slot, state);
    if (record.tag.load(std::memory_order_relaxed) == tag) continue;
    record.length.store(1, std::memory_order_relaxed);
    record.budget.store(0, std::memory_order_relaxed);
    record.tag.store(tag, std::memory_order_relaxed);
  }
}

}  // namespace

Membership join(const std::string& path) {
  Membership member;
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return {"open: " + errno_text(errno)};
  synch_fastpath_offer offer{};
  const int offered = ::ioctl(fd, SYNCH_IOC_FASTPATH_OFFER, &offer);
  const int offer_error = errno;
  ::close(fd);
  if (offered != 0) return {"offer: " + errno_text(offer_error)};
  auto connected = region::handshake::connect_to(
      std::string_view(offer.socket_name, strnlen(offer.socket_name, sizeof offer.socket_name)));
  if (!connected.ok()) return {"connect failed"};
  member.socket = connected.value();
  if (::send(member.socket, offer.secret, sizeof offer.secret, MSG_NOSIGNAL) < 0) {
    return {"send secret"};
  }
  auto granted = region::handshake::receive_grant(member.socket);
  if (!granted.ok()) return {"no grant"};
  member.grant = granted.value();
  return member;
}

std::string_view forgery_name(Forgery forgery) {
  switch (forgery) {
    case Forgery::kEndlessRing:
      return "a forged ring that never empties";
    case Forgery::kBrokenRingZeroBudget:
      return "a broken ring and its budget counter held at 0";
  }
  return "?";
}

std::string forge(const std::string& path, Forgery forgery,
                  std::chrono::steady_clock::time_point deadline,
                  const std::function<void()>& forging) {
  const Membership member = join(path);
  if (!member.error.empty()) return member.error;
  auto attached = region::Region::attach(member.grant.memfd);
  if (!attached.ok()) return "attach: " + errno_text(static_cast<int>(attached.error()));
  region::Region& mapped = attached.value();
  Header& header = mapped.header();
  const auto slot = static_cast<uint16_t>(member.grant.grant.slot);
  constexpr uint64_t kAlignMask = ~(kSpan - 1);
  // The records kept forged in front of `head`: three quarters of the ring (a server that
  // drains it must take them all before a member that fell behind for a moment shows).
  const uint64_t ahead = mapped.ring_bytes() / 4 * 3;
  uint64_t frontier = 0;  // forged up to here
  bool told = false;
  while (std::chrono::steady_clock::now() < deadline) {
    for (int lap = 0; lap < 64; ++lap) {
      switch (forgery) {
        case Forgery::kEndlessRing: {
          uint64_t head = header.head.load() & kAlignMask;
          if (!told && lap == 0) {
            // From the tail on: the ring's records forged from there.
            head = header.tail.load() & kAlignMask;
            frontier = head;
            header.reclaim.store(head);
            header.head.store(head);
          }
          if (head + ahead > frontier) {
            const uint64_t from = std::max(frontier, head);
            forge_records(mapped, from, head + ahead, slot, RecordState::kCommitted);
            frontier = head + ahead;
          }
          // A full ring, well-formed: tail exactly a ring ahead of reclaim (never behind head).
          const uint64_t reclaim = std::min(header.reclaim.load() & kAlignMask, head);
          header.tail.store(reclaim + mapped.ring_bytes());
          break;
        }
        case Forgery::kBrokenRingZeroBudget:
          header.tail.store(header.tail.load() | 8);
          for (int i = 0; i < 100; ++i)
            header.stored_bytes.store(0);
          break;
      }
    }
    if (!told) {
      told = true;
      if (forging) forging();
    }
  }
  ::close(member.socket);
  ::close(member.grant.memfd);
  ::close(member.grant.eventfd);
  return "";
}

}  // namespace synchmess::it
