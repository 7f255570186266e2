// Package helm holds no code: this module pins helm.sh/helm/v4 (its tool
// directive) so that scripts/helm.sh builds helm.sh/helm/v4/cmd/helm itself,
// upstream's main, at that release. The file gives `go vet ./...` a package.
package helm
