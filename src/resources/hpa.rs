//! The autoscaling/v2 HorizontalPodAutoscaler of an agent with `spec.autoscaling`.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};

use crate::api::AgentDeployment;

/// `None` without `spec.autoscaling`, or while suspended (the HPA would scale a suspended agent
/// back up).
pub fn horizontal_pod_autoscaler(
    agent: &AgentDeployment,
    name: &str,
    deployment: &str,
) -> Option<HorizontalPodAutoscaler> {
    let autoscaling = agent
        .spec
        .autoscaling
        .as_ref()
        .filter(|_| !agent.spec.suspend)?;
    let utilization = |resource: &str, percent: i32| MetricSpec {
        type_: "Resource".into(),
        resource: Some(ResourceMetricSource {
            name: resource.into(),
            target: MetricTarget {
                type_: "Utilization".into(),
                average_utilization: Some(percent),
                ..MetricTarget::default()
            },
        }),
        ..MetricSpec::default()
    };
    let mut metrics = Vec::new();
    if let Some(cpu) = autoscaling.target_cpu_utilization_percentage {
        metrics.push(utilization("cpu", cpu));
    }
    if let Some(memory) = autoscaling.target_memory_utilization_percentage {
        metrics.push(utilization("memory", memory));
    }
    metrics.extend(autoscaling.metrics.iter().cloned());
    Some(HorizontalPodAutoscaler {
        metadata: super::child_metadata(agent, name),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: deployment.to_string(),
            },
            min_replicas: Some(autoscaling.min_replicas),
            max_replicas: autoscaling.max_replicas,
            metrics: Some(metrics),
            behavior: autoscaling.behavior.clone(),
        },
        ..HorizontalPodAutoscaler::default()
    })
}
