// Package s3 is object storage on any S3-compatible service (MinIO, AWS
// S3, …) through minio-go: every object lives under a base path in one
// bucket, never at the bucket root.
package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/errandci/errand/manager/ost"
)

// DefaultPartSize is the part size of uploads whose size is unknown:
// minio-go holds one part in memory per upload, and without a cap would
// size parts for the largest object S3 allows.
const DefaultPartSize = 8 << 20

// DefaultConcurrency is the number of parts of one upload sent at once.
const DefaultConcurrency = 4

// MaxConcurrency bounds Config.Concurrency: each part in flight holds a
// buffer of PartSize bytes.
const MaxConcurrency = 64

// minPartSize is the smallest part S3 accepts (but for the last);
// MaxPartSize the largest.
const (
	minPartSize = 5 << 20
	MaxPartSize = 5 << 30
)

// Config says where the objects live and how to reach them.
type Config struct {
	// Endpoint is host:port of the service.
	Endpoint string
	// Secure selects HTTPS.
	Secure bool
	// Region, when the service wants one.
	Region string
	// Bucket must exist.
	Bucket string
	// Base is the path under which every object is kept; never empty.
	Base string
	// AccessKey and SecretKey are the credentials; they come from the
	// environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), never from
	// a URL or a flag.
	AccessKey string
	SecretKey string
	// PartSize is the size of the parts of a multipart upload (every
	// object larger than one part, and every object of unknown size):
	// 0 means DefaultPartSize, and it is raised to 5 MiB at least. S3
	// takes at most 10,000 parts, so it bounds an object of unknown
	// size to 10,000 × PartSize.
	PartSize uint64
	// Concurrency is the number of parts of one upload sent at once
	// (0 means DefaultConcurrency). An upload holds Concurrency ×
	// PartSize bytes in memory, whatever the object's size.
	Concurrency uint
}

// ParseURL reads s3://bucket/base?endpoint=host:port&secure=false&region=r.
// Credentials in the URL are refused: they would end up in process lists
// and logs.
func ParseURL(raw string) (Config, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Config{}, fmt.Errorf("s3 url: %w", err)
	}
	if u.Scheme != "s3" {
		return Config{}, fmt.Errorf("s3 url: scheme %q, want s3", u.Scheme)
	}
	if u.User != nil {
		return Config{}, errors.New("s3 url: credentials do not belong in the URL; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
	}
	q := u.Query()
	c := Config{Bucket: u.Host, Base: strings.Trim(u.Path, "/"), Endpoint: q.Get("endpoint"),
		Region: q.Get("region"), Secure: true}
	if s := q.Get("secure"); s != "" {
		if c.Secure, err = strconv.ParseBool(s); err != nil {
			return Config{}, fmt.Errorf("s3 url: secure=%q: %w", s, err)
		}
	}
	for k := range q {
		switch k {
		case "endpoint", "secure", "region":
		default:
			return Config{}, fmt.Errorf("s3 url: unknown parameter %q", k)
		}
	}
	return c, c.check()
}

func (c Config) check() error {
	switch {
	case c.Endpoint == "":
		return errors.New("s3: an endpoint is required (endpoint=host:port)")
	case c.Bucket == "":
		return errors.New("s3: a bucket is required (s3://bucket/base)")
	case c.Base == "":
		return errors.New("s3: a base path is required (s3://bucket/base): objects are never kept at the bucket root")
	case c.PartSize > MaxPartSize:
		return fmt.Errorf("s3: part size %d is larger than the %d bytes S3 allows", c.PartSize, MaxPartSize)
	case c.Concurrency > MaxConcurrency:
		return fmt.Errorf("s3: concurrency %d is more than %d", c.Concurrency, MaxConcurrency)
	}
	if _, err := ost.CleanKey(c.Base); err != nil {
		return fmt.Errorf("s3: base path: %w", err)
	}
	return nil
}

// Storage is an ost.Storage in a bucket, under a base path.
type Storage struct {
	client    *minio.Client
	transport *http.Transport
	bucket    string
	base      string // with a trailing slash
	partSize  uint64
	threads   uint
}

var _ ost.Storage = (*Storage)(nil)

// New connects to the service and checks that the bucket exists.
func New(ctx context.Context, c Config) (*Storage, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	tr, err := minio.DefaultTransport(c.Secure)
	if err != nil {
		return nil, fmt.Errorf("s3 transport for %s: %w", c.Endpoint, err)
	}
	client, err := minio.New(c.Endpoint, &minio.Options{
		Creds:     credentials.NewStaticV4(c.AccessKey, c.SecretKey, ""),
		Secure:    c.Secure,
		Region:    c.Region,
		Transport: tr,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 client for %s: %w", c.Endpoint, err)
	}
	ok, err := client.BucketExists(ctx, c.Bucket)
	if err != nil {
		return nil, fmt.Errorf("s3 bucket %s on %s: %w", c.Bucket, c.Endpoint, err)
	}
	if !ok {
		return nil, fmt.Errorf("s3 bucket %s does not exist on %s", c.Bucket, c.Endpoint)
	}
	part := c.PartSize
	if part == 0 {
		part = DefaultPartSize
	}
	part = max(part, minPartSize)
	threads := c.Concurrency
	if threads == 0 {
		threads = DefaultConcurrency
	}
	return &Storage{client: client, transport: tr, bucket: c.Bucket, base: c.Base + "/", partSize: part, threads: threads}, nil
}

// Close releases the idle connections to the service.
func (s *Storage) Close() error {
	s.transport.CloseIdleConnections()
	return nil
}

// object returns the object name of a key, under the base path.
func (s *Storage) object(key string) (string, error) {
	k, err := ost.CleanKey(key)
	if err != nil {
		return "", err
	}
	return s.base + k, nil
}

// Put stores an object. An object larger than one part, or of unknown
// size, is uploaded in parts of the configured size, Concurrency of them
// at once: memory stays at Concurrency × PartSize whatever the object's
// size. A multipart upload is visible only once it is completed; one that
// fails is aborted. One whose reader ends before size bytes is not stored.
func (s *Storage) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	name, err := s.object(key)
	if err != nil {
		return err
	}
	// The payload is not signed (the request is): hashing every chunk
	// for the signature would cost a SHA-256 of the whole object again,
	// beside the CRC32C checksum the service checks each part with.
	opts := minio.PutObjectOptions{ContentType: "application/octet-stream", PartSize: s.partSize,
		NumThreads: s.threads, ConcurrentStreamParts: s.threads > 1, DisableContentSha256: true}
	cr := &countingReader{r: r}
	if _, err := s.client.PutObject(ctx, s.bucket, name, cr, size, opts); err != nil {
		return fmt.Errorf("s3 put %s: %w", key, err)
	}
	if size >= 0 && cr.n < size {
		// Not a whole object: remove what was stored.
		_ = s.client.RemoveObject(context.WithoutCancel(ctx), s.bucket, name, minio.RemoveObjectOptions{})
		return fmt.Errorf("s3 put %s: %w: %d bytes of %d", key, io.ErrUnexpectedEOF, cr.n, size)
	}
	return nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// Get opens an object for reading.
func (s *Storage) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	name, err := s.object(key)
	if err != nil {
		return nil, err
	}
	obj, err := s.client.GetObject(ctx, s.bucket, name, minio.GetObjectOptions{})
	if err != nil {
		return nil, s.wrap("get", key, err)
	}
	// GetObject is lazy: Stat makes the request, so a missing object is
	// reported here rather than at the first Read.
	if _, err := obj.Stat(); err != nil {
		_ = obj.Close()
		return nil, s.wrap("get", key, err)
	}
	return obj, nil
}

// GetRange opens n bytes of an object from off, with one ranged request.
func (s *Storage) GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	name, err := s.object(key)
	if err != nil {
		return nil, err
	}
	if off < 0 {
		return nil, fmt.Errorf("s3 get %s: %w: offset %d", key, ost.ErrInvalidRange, off)
	}
	if n == 0 {
		info, err := s.Stat(ctx, key)
		if err != nil {
			return nil, err
		}
		if off > info.Size {
			return nil, fmt.Errorf("s3 get %s: %w: offset %d of %d bytes", key, ost.ErrInvalidRange, off, info.Size)
		}
		return io.NopCloser(strings.NewReader("")), nil
	}
	opts := minio.GetObjectOptions{}
	switch {
	case n > 0:
		err = opts.SetRange(off, off+n-1)
	case off > 0:
		err = opts.SetRange(off, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("s3 get %s: %w: %v", key, ost.ErrInvalidRange, err)
	}
	obj, err := s.client.GetObject(ctx, s.bucket, name, opts)
	if err != nil {
		return nil, s.wrap("get", key, err)
	}
	if _, err := obj.Stat(); err != nil {
		_ = obj.Close()
		if minio.ToErrorResponse(err).Code == "InvalidRange" {
			// S3 refuses a range that starts at the end; an empty
			// read is what the contract promises there.
			info, serr := s.Stat(ctx, key)
			if serr == nil && off == info.Size {
				return io.NopCloser(strings.NewReader("")), nil
			}
			return nil, fmt.Errorf("s3 get %s: %w: offset %d", key, ost.ErrInvalidRange, off)
		}
		return nil, s.wrap("get", key, err)
	}
	return obj, nil
}

// Stat describes an object.
func (s *Storage) Stat(ctx context.Context, key string) (ost.ObjectInfo, error) {
	name, err := s.object(key)
	if err != nil {
		return ost.ObjectInfo{}, err
	}
	info, err := s.client.StatObject(ctx, s.bucket, name, minio.StatObjectOptions{})
	if err != nil {
		return ost.ObjectInfo{}, s.wrap("stat", key, err)
	}
	return ost.ObjectInfo{Key: key, Size: info.Size, LastModified: info.LastModified}, nil
}

// Delete removes an object; a missing object is not an error.
func (s *Storage) Delete(ctx context.Context, key string) error {
	name, err := s.object(key)
	if err != nil {
		return err
	}
	if err := s.client.RemoveObject(ctx, s.bucket, name, minio.RemoveObjectOptions{}); err != nil {
		if errors.Is(s.wrap("delete", key, err), ost.ErrNotFound) {
			return nil
		}
		return fmt.Errorf("s3 delete %s: %w", key, err)
	}
	return nil
}

// List returns the objects under prefix in key order (S3 lists in byte
// order of the names, and every name shares the base path).
func (s *Storage) List(ctx context.Context, prefix string) ([]ost.ObjectInfo, error) {
	if strings.Contains(prefix, "..") || strings.HasPrefix(prefix, "/") || strings.ContainsRune(prefix, 0) {
		return nil, fmt.Errorf("%w: prefix %q", ost.ErrInvalidKey, prefix)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := []ost.ObjectInfo{}
	for o := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.base + prefix, Recursive: true}) {
		if o.Err != nil {
			return nil, fmt.Errorf("s3 list %s: %w", prefix, o.Err)
		}
		key := strings.TrimPrefix(o.Key, s.base)
		if key == o.Key || path.Clean(key) != key {
			continue
		}
		out = append(out, ost.ObjectInfo{Key: key, Size: o.Size, LastModified: o.LastModified})
	}
	return out, nil
}

// wrap turns S3's "no such key" into ost.ErrNotFound.
func (s *Storage) wrap(op, key string, err error) error {
	switch minio.ToErrorResponse(err).Code {
	case "NoSuchKey", "NotFound":
		return fmt.Errorf("s3 %s %s: %w", op, key, ost.ErrNotFound)
	}
	return fmt.Errorf("s3 %s %s: %w", op, key, err)
}
