-- Argo CD health of a SloPolicy (guardrails.dev/v1alpha1), read from its Ready
-- condition and budget gate.
--   Degraded:    Ready=False (InvalidSpec, PrometheusUnavailable)
--   Healthy:     evaluated, whatever the gate (the message says which): a Frozen gate is
--                the policy working, and a Degraded policy would hold back the sync waves
--                that ship the corrective fix

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
  hs.message = (ready.reason or "") .. ": " .. (ready.message or "")
  return hs
end
local gate = status.gate or "Unknown"
hs.message = "gate " .. gate
if status.gateReason ~= nil and status.gateReason ~= "" then
  hs.message = hs.message .. ": " .. status.gateReason
end
hs.status = "Healthy"
return hs
