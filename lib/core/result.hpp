// Errno-style results for the request path: a value or a std::errc, never an exception.
#pragma once

#include <cassert>
#include <cerrno>
#include <system_error>
#include <type_traits>
#include <utility>

namespace synchmess::core {

// The error half of a Result. Wraps std::errc so that `return Error{std::errc::invalid_argument}`
// reads as what it is and cannot be confused with a value.
struct Error {
  std::errc code;
};

inline constexpr Error make_error(std::errc code) noexcept {
  return Error{code};
}

// Errnos that std::errc has no name for.
inline constexpr std::errc kQuotaExceeded = static_cast<std::errc>(EDQUOT);  // a per-user limit

// The positive errno of an error code, for replies to the kernel and for C APIs.
inline constexpr int to_errno(std::errc code) noexcept {
  return static_cast<int>(code);
}

// A value of type T or an error code. Accessing the wrong half is a programming error (asserted).
template <class T>
class [[nodiscard]] Result {
  static_assert(!std::is_reference_v<T>, "Result holds values; return a pointer for references");

 public:
  Result(T value) noexcept(std::is_nothrow_move_constructible_v<T>)  // NOLINT: implicit by design
      : ok_(true), value_(std::move(value)) {}
  Result(Error error) noexcept : ok_(false), error_(error.code) {}  // NOLINT: implicit by design

  Result(Result&& other) noexcept(std::is_nothrow_move_constructible_v<T>) : ok_(other.ok_) {
    if (ok_) {
      new (&value_) T(std::move(other.value_));
    } else {
      error_ = other.error_;
    }
  }
  Result(const Result&) = delete;
  Result& operator=(const Result&) = delete;
  Result& operator=(Result&&) = delete;
  ~Result() {
    if (ok_) value_.~T();
  }

  bool ok() const noexcept { return ok_; }
  explicit operator bool() const noexcept { return ok_; }

  T& value() & noexcept {
    assert(ok_);
    return value_;
  }
  const T& value() const& noexcept {
    assert(ok_);
    return value_;
  }
  T&& value() && noexcept {
    assert(ok_);
    return std::move(value_);
  }
  T* operator->() noexcept { return &value(); }
  T& operator*() & noexcept { return value(); }

  std::errc error() const noexcept {
    assert(!ok_);
    return error_;
  }

 private:
  bool ok_;
  union {
    T value_;
    std::errc error_;
  };
};

// Success or an error code.
template <>
class [[nodiscard]] Result<void> {
 public:
  Result() noexcept = default;
  Result(Error error) noexcept : error_(error.code) {}  // NOLINT: implicit by design

  bool ok() const noexcept { return error_ == std::errc{}; }
  explicit operator bool() const noexcept { return ok(); }
  std::errc error() const noexcept {
    assert(!ok());
    return error_;
  }

 private:
  std::errc error_{};
};

using Status = Result<void>;

}  // namespace synchmess::core
