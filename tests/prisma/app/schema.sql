-- The tables of schema.prisma. `prisma migrate diff --from-empty --to-schema schema.prisma
-- --script` writes the same tables with `PRIMARY KEY CLUSTERED` / `UNIQUE NONCLUSTERED` table
-- constraints and the foreign keys as `ALTER TABLE ... ADD CONSTRAINT`; tdslite takes neither
-- yet, nor a schema-qualified REFERENCES or two constraints on one column: here the keys are
-- written as it takes them (same names and columns; Profile.userId keeps its UNIQUE key and
-- goes without its foreign key).
-- Batches are separated by GO lines.
CREATE TABLE [dbo].[User] (
    [id] INT NOT NULL IDENTITY(1,1) CONSTRAINT [User_pkey] PRIMARY KEY,
    [email] NVARCHAR(1000) NOT NULL CONSTRAINT [User_email_key] UNIQUE,
    [name] NVARCHAR(1000),
    [balance] DECIMAL(18,4) NOT NULL CONSTRAINT [User_balance_df] DEFAULT 0,
    [visits] BIGINT NOT NULL CONSTRAINT [User_visits_df] DEFAULT 0,
    [active] BIT NOT NULL CONSTRAINT [User_active_df] DEFAULT 1,
    [score] FLOAT(53),
    [birthday] DATE,
    [createdAt] DATETIME2 NOT NULL CONSTRAINT [User_createdAt_df] DEFAULT CURRENT_TIMESTAMP,
    [avatar] VARBINARY(max)
);
GO
CREATE TABLE [dbo].[Post] (
    [id] INT NOT NULL IDENTITY(1,1) CONSTRAINT [Post_pkey] PRIMARY KEY,
    [title] NVARCHAR(1000) NOT NULL,
    [published] BIT NOT NULL CONSTRAINT [Post_published_df] DEFAULT 0,
    [authorId] INT NOT NULL CONSTRAINT [Post_authorId_fkey] REFERENCES [User]([id])
);
GO
CREATE TABLE [dbo].[Profile] (
    [id] INT NOT NULL IDENTITY(1,1) CONSTRAINT [Profile_pkey] PRIMARY KEY,
    [bio] NVARCHAR(1000) NOT NULL,
    [userId] INT NOT NULL CONSTRAINT [Profile_userId_key] UNIQUE
);
