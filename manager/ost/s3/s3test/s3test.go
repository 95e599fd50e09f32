// Package s3test gives tests S3 object storage under a fresh base path on
// the server that scripts/test starts (MinIO).
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/errandci/errand/manager/ost/s3"
)

// Environment variables that say where the test server is.
const (
	EnvEndpoint = "ERRAND_TEST_S3_ENDPOINT"
	EnvBucket   = "ERRAND_TEST_S3_BUCKET"
)

// Config returns the test server's configuration under a base path of the
// test's own, creating the bucket if needed. It fails the test with how
// to get a server when there is none.
func Config(t testing.TB) s3.Config {
	t.Helper()
	c := s3.Config{
		Endpoint:  os.Getenv(EnvEndpoint),
		Bucket:    os.Getenv(EnvBucket),
		AccessKey: os.Getenv("AWS_ACCESS_KEY_ID"),
		SecretKey: os.Getenv("AWS_SECRET_ACCESS_KEY"),
	}
	if c.Endpoint == "" || c.Bucket == "" || c.AccessKey == "" || c.SecretKey == "" {
		t.Fatalf("%s, %s, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set: this test needs MinIO. "+
			"Run scripts/test, which builds and starts it (scripts/setup.d/minio.sh; "+
			"go install github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c)", EnvEndpoint, EnvBucket)
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	c.Base = "errand-test/" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := minio.New(c.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(c.AccessKey, c.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	ok, err := client.BucketExists(ctx, c.Bucket)
	if err != nil {
		t.Fatalf("s3 test server %s: %v", c.Endpoint, err)
	}
	if !ok {
		err := client.MakeBucket(ctx, c.Bucket, minio.MakeBucketOptions{})
		if err != nil && minio.ToErrorResponse(err).Code != "BucketAlreadyOwnedByYou" {
			t.Fatalf("create bucket %s: %v", c.Bucket, err)
		}
	}
	return c
}
