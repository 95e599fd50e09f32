//go:build tools

// This file pins the modules the project builds on before every package
// that uses them exists.
package errand

import (
	_ "github.com/alecthomas/kingpin/v2"
	_ "github.com/cenkalti/backoff/v4"
	_ "github.com/chromedp/chromedp"
	_ "github.com/docker/docker/client"
	_ "github.com/google/go-jsonnet"
	_ "github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/minio/minio-go/v7"
	_ "github.com/oklog/ulid/v2"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/rogpeppe/go-internal/testscript"
	_ "github.com/sirupsen/logrus"
	_ "go.uber.org/goleak"
	_ "modernc.org/sqlite"
	_ "sigs.k8s.io/yaml"
)
