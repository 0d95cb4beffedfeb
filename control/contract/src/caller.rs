//! Who submitted a job, as the deployment authenticated them.
//!
//! On AWS a job's `username` is not the job's to choose: it is the caller's name, taken from
//! the identity API Gateway (or a function URL) checked — an IAM user's name, or an assumed
//! role's name (not its session name, which whoever assumes the role picks) — or, for SNS,
//! the topic's name. The deployment's credential grants are keyed by the caller's canonical
//! principal (its ARN, an assumed role's as the role's), and so are its submissions'
//! idempotency records.

/// An authenticated submitter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The principal's ARN, canonical: an IAM user's, a role's (`arn:aws:iam::A:role/R`
    /// for an assumed role: the session, which the assumer names, is dropped), or an SNS
    /// topic's. Grants are matched against it and submissions recorded under it.
    pub principal: String,
    /// What kind of principal: `user`, `role`, `root` or `topic`.
    pub kind: &'static str,
    /// The name jobs from it run under (`username`).
    pub name: String,
}

impl Caller {
    /// The caller an IAM ARN names: `arn:aws:iam::ACCOUNT:user/PATH/NAME` → `NAME`,
    /// `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION` and `arn:aws:iam::ACCOUNT:role/PATH/ROLE`
    /// → `ROLE`, `arn:aws:iam::ACCOUNT:root` → `root`. `None` for anything else.
    pub fn from_iam_arn(arn: &str) -> Option<Caller> {
        let resource = arn_resource(arn, &["iam", "sts"])?;
        let (kind, name, principal) = match resource.split_once('/') {
            None if resource == "root" => ("root", "root", arn.to_owned()),
            Some(("user", path)) => ("user", path.rsplit('/').next()?, arn.to_owned()),
            Some(("role", path)) => ("role", path.rsplit('/').next()?, arn.to_owned()),
            Some(("assumed-role", rest)) => {
                let role = rest.split('/').next()?;
                let mut parts = arn.splitn(6, ':');
                let (_, partition, _, _, account) = (
                    parts.next(),
                    parts.next()?,
                    parts.next(),
                    parts.next(),
                    parts.next()?,
                );
                let canonical = format!("arn:{partition}:iam::{account}:role/{role}");
                ("role", role, canonical)
            }
            _ => return None,
        };
        (!name.is_empty()).then(|| Caller {
            principal,
            kind,
            name: name.to_owned(),
        })
    }

    /// The caller an SNS topic's ARN names: `arn:aws:sns:REGION:ACCOUNT:TOPIC` → `TOPIC`.
    pub fn from_topic_arn(arn: &str) -> Option<Caller> {
        let topic = arn_resource(arn, &["sns"])?;
        Some(Caller {
            principal: arn.to_owned(),
            kind: "topic",
            name: topic.to_owned(),
        })
    }
}

/// The resource part of `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE` when `SERVICE` is
/// one of `services` and the resource is a name (no `:`, not empty).
fn arn_resource<'a>(arn: &'a str, services: &[&str]) -> Option<&'a str> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(_), Some(service), Some(_), Some(_), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    (services.contains(&service) && !resource.is_empty() && !resource.contains(':'))
        .then_some(resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_principal_never_from_a_session() {
        for (arn, name) in [
            ("arn:aws:iam::123456789012:user/alice", "alice"),
            ("arn:aws:iam::123456789012:user/team/ci/bot", "bot"),
            (
                "arn:aws:sts::123456789012:assumed-role/Deployer/alice@example.com",
                "Deployer",
            ),
            (
                "arn:aws:iam::123456789012:role/platform/Deployer",
                "Deployer",
            ),
            ("arn:aws:iam::123456789012:root", "root"),
        ] {
            assert_eq!(Caller::from_iam_arn(arn).unwrap().name, name, "{arn}");
        }
        assert_eq!(
            Caller::from_topic_arn("arn:aws:sns:us-east-1:123456789012:jobs")
                .unwrap()
                .name,
            "jobs"
        );
        let assumed =
            Caller::from_iam_arn("arn:aws:sts::123456789012:assumed-role/Deployer/anything")
                .unwrap();
        assert_eq!(assumed.principal, "arn:aws:iam::123456789012:role/Deployer");
        assert_eq!(assumed.kind, "role");
        for bad in ["", "alice", "arn:aws:s3:::bucket", "arn:aws:iam::1:group/x"] {
            assert_eq!(Caller::from_iam_arn(bad), None, "{bad}");
        }
    }
}
