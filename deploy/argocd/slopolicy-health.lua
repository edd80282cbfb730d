-- Argo CD health of a SloPolicy (guardrails.dev/v1alpha1), read from its Ready
-- condition and budget gate.
--   Degraded:    Ready=False (InvalidSpec, PrometheusUnavailable) or the gate is Frozen
--                (the error budget is spent: only corrective changes ship)
--   Healthy:     evaluated, gate Open or Restricted (the message says which)
--   Progressing: not evaluated yet, or not for the latest spec
local hs = { status = "Progressing", message = "Waiting for the first evaluation" }
local status = obj.status
if status == nil then
  return hs
end
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local ready = nil
for _, c in ipairs(status.conditions or {}) do
  if c.type == "Ready" then
    ready = c
  end
end
if ready == nil then
  return hs
end
if ready.status ~= "True" then
  hs.status = "Degraded"
  hs.message = ready.reason .. ": " .. (ready.message or "")
  return hs
end
local gate = status.gate or "Unknown"
hs.message = "gate " .. gate
if status.gateReason ~= nil and status.gateReason ~= "" then
  hs.message = hs.message .. ": " .. status.gateReason
end
if gate == "Frozen" then
  hs.status = "Degraded"
else
  hs.status = "Healthy"
end
return hs
