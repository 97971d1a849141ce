// A hostile member of a group, as an attacker would be one (SPEC "Fast path", "Trust"): it does
// the fast path's handshake by hand, maps its group's region read-write and forges it. Used by
// the end-to-end suite (in forked children) and by synchmess_load_client (the lifecycle checks:
// a server stopped while a member forges).
//
// Everything here runs in the calling thread and process: no threads (the suite forks children
// that must not start any).
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>

#include "region/handshake.hpp"

namespace synchmess::it {

// The handshake as the library makes it, on a descriptor of `path`: the grant (memfd, eventfd,
// slot) with the connection (kept open: the member's life), or what failed.
struct Membership {
  std::string error;
  int socket = -1;
  region::handshake::Received grant{};
};
Membership join(const std::string& path);

enum class Forgery {
  // A ring that never empties: from the ring's tail on, its front kept full of one-byte
  // COMMITTED records, forged ahead of `head` as fast as the server takes them (tail a ring
  // ahead of reclaim: every position in order). A server that drains the ring until it is empty
  // never gets there (issue 14: a removal took 6 s, installs of other groups waited).
  kEndlessRing,
  // An unaligned `tail` (the server calls the ring broken), then the budget counter held at 0
  // without end: the group's max_storage_size must still hold for what the server stores
  // (issue 14: 62.7 MiB stored in a group of a 1 MiB budget).
  kBrokenRingZeroBudget,
};
std::string_view forgery_name(Forgery forgery);

// Joins the group at `path` and forges its region until `deadline`; `forging` is called once,
// after the first lap (the forgery is in place). Returns "" or what failed.
std::string forge(const std::string& path, Forgery forgery,
                  std::chrono::steady_clock::time_point deadline,
                  const std::function<void()>& forging = {});

}  // namespace synchmess::it
