-- Argo CD health check of agent-operator's kinds (LLMProvider, AgentDeployment, AgentTask),
-- reading the same conditions as kstatus: Stalled and Reconciling while true, Ready, and
-- observedGeneration. Shipped in config/argocd/argocd-cm.yaml.
local health = { status = "Progressing", message = "waiting for the operator's first status" }
if obj.status == nil or obj.status.conditions == nil then
  return health
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  health.message = "waiting for the operator to observe generation " .. generation
  return health
end
local found = {}
for _, condition in ipairs(obj.status.conditions) do
  found[condition.type] = condition
end
local function said(condition)
  return condition.reason .. ": " .. (condition.message or "")
end
if found.Stalled ~= nil and found.Stalled.status == "True" then
  return { status = "Degraded", message = said(found.Stalled) }
end
if found.Reconciling ~= nil and found.Reconciling.status == "True" then
  return { status = "Progressing", message = said(found.Reconciling) }
end
if found.Ready ~= nil and found.Ready.status == "True" then
  if found.Ready.reason == "Suspended" then
    return { status = "Suspended", message = said(found.Ready) }
  end
  return { status = "Healthy", message = said(found.Ready) }
end
if found.Ready ~= nil and found.Ready.status == "False" then
  -- Not ready and not working toward it: a provider that is down, an agent without one.
  return { status = "Degraded", message = said(found.Ready) }
end
return health
