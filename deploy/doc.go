// Package deploy holds the checks of the AWS SAM deployment: template_test.go parses
// template.yaml with goformation and verifies the functions, their events, their environment
// against pkg/config, IAM least privilege, the archive bucket and the alarms; it also checks the
// sample events under events/, which `go run ./deploy/genevents` regenerates.
package deploy
