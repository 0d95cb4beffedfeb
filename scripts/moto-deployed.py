"""moto server with the Sluice stack deployed from infra/template.yaml and IAM enforced.

Every call after start-up is checked against the calling identity's policies, so a test
that drives each function with credentials of that function's role (as Lambda would) fails
when the template forgets a permission the code needs.

Start-up, in order:
  1. the SAM template is transformed offline (aws-sam-translator, the transform
     CloudFormation itself runs) and created as a stack in moto, with NamePrefix given;
  2. the roles' inline policies are put back as JSON (moto's CloudFormation stores them as
     Python reprs and keeps the `null` an `!If ... AWS::NoValue` leaves in a list);
  3. an administrator user (for the test's own set-up and inspection) and a session for
     each role are created;
  4. IAM enforcement is switched on and the deployment is written as JSON to --out.

moto checks S3 calls against bucket/key ARNs but every other service against "*", and
names some calls differently from IAM; the patches below give it each call's resource and
IAM action (DynamoDB transactions are authorized per item, as IAM does), let a presigned
URL act as the role that signed it, and answer a missing key with 403 to a caller without
s3:ListBucket on the bucket, as S3 does. moto recomputes
SigV4 signatures from re-encoded requests and disagrees with real clients on some S3
listing queries, so signatures are not compared: identity still comes from the access key
and the session token, both checked.

Usage: python3 scripts/moto-deployed.py --port PORT --template infra/template.yaml \
           --name-prefix PREFIX --out FILE
"""

import argparse
import ast
import io
import json
import os
import sys
import threading
import zipfile
from urllib.parse import parse_qs, unquote, urlparse

import boto3
from moto import settings
from moto.core.authorization import ActionAuthenticatorMixin
from moto.iam.access_control import IAMRequest, IAMRequestBase
from moto.server import ThreadedMotoServer
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

ACCOUNT = "123456789012"
REGION = "us-east-1"


def arn(service, resource):
    return f"arn:aws:{service}:{REGION}:{ACCOUNT}:{resource}"


def dynamodb_checks(action, body):
    """(IAM action, resource) pairs of a DynamoDB call."""
    table = lambda name: arn("dynamodb", f"table/{name}")  # noqa: E731
    if action == "TransactWriteItems":
        kinds = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                 "ConditionCheck": "ConditionCheckItem"}
        return [(kinds[kind], table(item[kind]["TableName"]))
                for item in body["TransactItems"] for kind in item]
    if action == "TransactGetItems":
        return [("GetItem", table(item["Get"]["TableName"])) for item in body["TransactItems"]]
    if action in ("BatchWriteItem", "BatchGetItem"):
        return [(action, table(name)) for name in body["RequestItems"]]
    if "TableName" not in body:
        return [(action, "*")]
    resource = table(body["TableName"])
    if "IndexName" in body:
        resource += f"/index/{body['IndexName']}"
    return [(action, resource)]


def ssm_checks(action, body):
    parameter = lambda name: arn("ssm", "parameter" + (name if name.startswith("/") else "/" + name))  # noqa: E731
    if "Names" in body:
        return [(action, parameter(name)) for name in body["Names"]]
    if "Path" in body:
        return [(action, parameter(body["Path"]))]
    return [(action, parameter(body["Name"]) if "Name" in body else "*")]


def states_checks(action, body):
    for field in ("stateMachineArn", "executionArn"):
        if field in body:
            return [(action, body[field])]
    return [(action, "*")]


def codebuild_checks(action, body):
    if "projectName" in body:
        return [(action, arn("codebuild", f"project/{body['projectName']}"))]
    if "ids" in body:
        return [(action, arn("codebuild", f"project/{build.split(':')[0]}")) for build in body["ids"]]
    if "id" in body:
        return [(action, arn("codebuild", f"project/{body['id'].split(':')[0]}"))]
    return [(action, "*")]


def secretsmanager_checks(action, body):
    secret = body.get("SecretId", "*")
    return [(action, secret if secret.startswith("arn:") or secret == "*" else arn("secretsmanager", f"secret:{secret}"))]


def lambda_checks(action, handler):
    names = {"Invoke": "InvokeFunction"}
    # /2015-03-31/functions/NAME/...: the function named (a name, NAME:QUALIFIER, or an
    # ARN); /2015-03-31/functions: none.
    parts = unquote(handler.path.split("?")[0]).strip("/").split("/")
    if len(parts) > 2 and parts[1] == "functions":
        name = parts[2].split("function:")[-1].split(":")[0]
        resource = arn("lambda", f"function:{name}")
    else:
        resource = "*"
    return [(names.get(action, action), resource)]


def authorize(handler, checks):
    """moto's own authorization (core/authorization.py) for each (action, resource)."""
    if ActionAuthenticatorMixin.request_count < settings.INITIAL_NO_AUTH_ACTION_COUNT:
        ActionAuthenticatorMixin.request_count += 1
        return
    path = handler.uri.split("://", 1)[-1].split("/", 1)[-1]
    for action, resource in checks:
        request = IAMRequest(
            account_id=handler.current_account, method=handler.method, path="/" + path,
            data=handler.data, body=handler.raw_body, headers=handler.headers, action=action,
        )
        request.check_action_permitted(resource)


def patch(handler_class, checks_of):
    def checked(self, resource="*"):
        action = self._get_action()
        if checks_of is lambda_checks:
            authorize(self, lambda_checks(action, self))
            return
        try:
            body = json.loads(self.raw_body or b"{}")
        except ValueError:
            body = {}
        authorize(self, checks_of(action, body))

    handler_class._authenticate_and_authorize_normal_action = checked


def install_patches():
    from moto.awslambda.responses import LambdaResponse
    from moto.codebuild.responses import CodeBuildResponse
    from moto.dynamodb.responses import DynamoHandler
    from moto.secretsmanager.responses import SecretsManagerResponse
    from moto.ssm.responses import SimpleSystemManagerResponse
    from moto.stepfunctions.responses import StepFunctionResponse

    patch(DynamoHandler, dynamodb_checks)
    patch(SimpleSystemManagerResponse, ssm_checks)
    patch(StepFunctionResponse, states_checks)
    patch(CodeBuildResponse, codebuild_checks)
    patch(SecretsManagerResponse, secretsmanager_checks)
    patch(LambdaResponse, lambda_checks)
    IAMRequestBase.check_signature = lambda self: None

    # moto reads the identity from the Authorization header only; a presigned URL (the
    # workers' result callbacks) carries it in its query, and acts as the role that signed.
    checked = ActionAuthenticatorMixin._authenticate_and_authorize_action

    def presigned_aware(self, iam_request_cls, resource="*"):
        query = parse_qs(urlparse(self.uri).query)
        if "Authorization" in self.headers or "X-Amz-Credential" not in query:
            return checked(self, iam_request_cls, resource)
        headers = self.headers
        self.headers = dict(headers.items())
        self.headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={query['X-Amz-Credential'][0]}, "
            f"SignedHeaders=host, Signature={query.get('X-Amz-Signature', [''])[0]}"
        )
        if "X-Amz-Security-Token" in query:
            self.headers["X-Amz-Security-Token"] = query["X-Amz-Security-Token"][0]
        try:
            return checked(self, iam_request_cls, resource)
        finally:
            self.headers = headers

    ActionAuthenticatorMixin._authenticate_and_authorize_action = presigned_aware

    # S3 tells a caller that may not list the bucket 403, not 404, for a missing key.
    from moto.s3.exceptions import MissingKey
    from moto.s3.responses import S3Response

    def may_list(handler):
        handler.data["Action"] = "ListBucket"
        handler._authenticate_and_authorize_s3_action(bucket_name=handler.bucket_name)

    def missing_needs_list(method):
        def wrapped(self, *args, **kwargs):
            try:
                answer = method(self, *args, **kwargs)
            except MissingKey:
                may_list(self)
                raise
            if isinstance(answer, tuple) and answer[0] == 404:
                may_list(self)
            return answer

        return wrapped

    S3Response._key_response_get = missing_needs_list(S3Response._key_response_get)
    S3Response.head_object = missing_needs_list(S3Response.head_object)


class ManagedPolicies:
    """The AWS managed policies SAM may attach, by name (moto has none loaded)."""

    def load(self):
        return {
            "AWSLambdaBasicExecutionRole":
                "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
        }


def deploy(endpoint, template_path, name_prefix):
    admin = dict(endpoint_url=endpoint, region_name=REGION,
                 aws_access_key_id="testing", aws_secret_access_key="testing")
    s3 = boto3.client("s3", **admin)
    code_bucket = f"{name_prefix}-code"
    s3.create_bucket(Bucket=code_bucket)
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("bootstrap", "played by the tests")
    s3.put_object(Bucket=code_bucket, Key="function.zip", Body=code.getvalue())

    with open(template_path) as file:
        template = yaml_parse(file.read())
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = f"s3://{code_bucket}/function.zip"
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    plain = transform(template, {}, ManagedPolicies())

    cloudformation = boto3.client("cloudformation", **admin)
    cloudformation.create_stack(
        StackName=name_prefix, TemplateBody=json.dumps(plain), Capabilities=["CAPABILITY_IAM"],
        Parameters=[{"ParameterKey": "NamePrefix", "ParameterValue": name_prefix}],
    )
    stack = cloudformation.describe_stacks(StackName=name_prefix)["Stacks"][0]
    if stack["StackStatus"] != "CREATE_COMPLETE":
        sys.exit(f"moto-deployed: stack {name_prefix} is {stack['StackStatus']}: {stack.get('StackStatusReason')}")
    resources = {
        resource["LogicalResourceId"]: resource["PhysicalResourceId"]
        for resource in cloudformation.list_stack_resources(StackName=name_prefix)["StackResourceSummaries"]
    }

    iam = boto3.client("iam", **admin)
    sts = boto3.client("sts", **admin)
    roles = {}
    for logical, physical in resources.items():
        if not logical.endswith("Role"):
            continue
        for name in iam.list_role_policies(RoleName=physical)["PolicyNames"]:
            document = iam.get_role_policy(RoleName=physical, PolicyName=name)["PolicyDocument"]
            if isinstance(document, str):
                document = ast.literal_eval(document)
            document["Statement"] = [s for s in document["Statement"] if s is not None]
            document.setdefault("Version", "2012-10-17")
            iam.put_role_policy(RoleName=physical, PolicyName=name, PolicyDocument=json.dumps(document))
        role_arn = iam.get_role(RoleName=physical)["Role"]["Arn"]
        session = sts.assume_role(RoleArn=role_arn, RoleSessionName="sluice-test",
                                  DurationSeconds=43200)["Credentials"]
        roles[logical] = {
            "access_key_id": session["AccessKeyId"],
            "secret_access_key": session["SecretAccessKey"],
            "session_token": session["SessionToken"],
        }

    lambda_ = boto3.client("lambda", **admin)
    role_names = {physical: logical for logical, physical in resources.items()}
    functions = {}
    configurations = {f["FunctionName"]: f for f in lambda_.list_functions()["Functions"]}
    for logical, resource in plain["Resources"].items():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        configuration = configurations[resources[logical]]
        functions[logical] = {
            "name": configuration["FunctionName"],
            "role": role_names[configuration["Role"].split("/")[-1]],
            "environment": configuration.get("Environment", {}).get("Variables", {}),
        }

    iam.create_user(UserName="sluice-test-admin")
    iam.put_user_policy(UserName="sluice-test-admin", PolicyName="everything", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="sluice-test-admin")["AccessKey"]
    return {
        "endpoint": endpoint,
        "region": REGION,
        "name_prefix": name_prefix,
        "resources": resources,
        "admin": {"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]},
        "roles": roles,
        "functions": functions,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--template", required=True)
    parser.add_argument("--name-prefix", required=True)
    parser.add_argument("--out", required=True)
    arguments = parser.parse_args()

    install_patches()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=arguments.port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{arguments.port}"
    deployment = deploy(endpoint, arguments.template, arguments.name_prefix)
    # Lambda invokes are accepted and run nothing: the tests play each function.
    from moto.core.config import default_user_config
    default_user_config["lambda"]["use_docker"] = False
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0
    with open(arguments.out + ".part", "w") as file:
        json.dump(deployment, file, indent=1)
    os.replace(arguments.out + ".part", arguments.out)
    print(f"moto with IAM enforced and stack {arguments.name_prefix} deployed on {endpoint}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
