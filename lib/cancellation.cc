#include "onlyone/cancellation.h"

#include "onlyone/internal/cancellation_state.h"

namespace onlyone {

CancellationToken::CancellationToken()
    : state_(std::make_shared<internal::CancellationState>()) {}

void CancellationToken::Cancel() { state_->Cancel(); }

bool CancellationToken::IsCancelled() const { return state_->IsCancelled(); }

}  // namespace onlyone
